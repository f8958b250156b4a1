"""The ``ciml`` app: --version, --data-path, help and shell completion."""

import pathlib

import pytest

import ciml
from ciml import base, plugins
from ciml.hookspecs import hookimpl
from ciml.shell import CimlApp


class NoopTrigger(base.Trigger):
    """Does nothing"""

    name = "noop"

    def run(self, on_event):
        pass

    def stop(self):
        pass


class NoopPlugin:
    @hookimpl
    def ciml_register_triggers(self, register):
        register(NoopTrigger)


def test_version_lists_ciml_and_plugin_distributions(run_ciml):
    manager = plugins.PluginManager()
    manager.add_plugin(NoopPlugin(), "noop", distribution="ciml-noop", version="0.3")
    plugins.reset_manager(manager)

    rc, out, err = run_ciml(["--version"])

    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f"ciml {ciml.__version__}"
    assert f"  plugins from ciml {ciml.__version__}" in lines
    assert "  plugins from ciml-noop 0.3" in lines


def test_version_from_a_real_process(run_ciml_subprocess):
    rc, out, err = run_ciml_subprocess(["--version"])
    assert rc == 0, err
    assert out.splitlines()[0] == f"ciml {ciml.__version__}"
    assert f"plugins from ciml {ciml.__version__}" in out


def _data_path(argv, monkeypatch, env=None):
    monkeypatch.delenv("CIML_DATA_PATH", raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    app = CimlApp()
    app.options, _ = app.parser.parse_known_args(argv)
    return app.data_path.root


def test_data_path_option(monkeypatch, tmp_path):
    assert _data_path(["--data-path", str(tmp_path / "d")], monkeypatch) == tmp_path / "d"


def test_data_path_option_beats_the_environment(monkeypatch, tmp_path):
    root = _data_path(["--data-path", str(tmp_path / "opt")], monkeypatch,
                      {"CIML_DATA_PATH": str(tmp_path / "env")})
    assert root == tmp_path / "opt"


def test_data_path_environment(monkeypatch, tmp_path):
    root = _data_path([], monkeypatch, {"CIML_DATA_PATH": str(tmp_path / "env")})
    assert root == tmp_path / "env"


def test_data_path_default_follows_xdg(monkeypatch, tmp_path):
    root = _data_path([], monkeypatch, {"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert root == tmp_path / "xdg" / "ciml"


def test_data_path_default_is_under_home(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _data_path([], monkeypatch) == pathlib.Path(tmp_path) / ".local/share/ciml"


def test_data_path_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _data_path(["--data-path", "~/x"], monkeypatch) == tmp_path / "x"


def test_help_lists_commands_and_global_options(run_ciml):
    rc, out, err = run_ciml(["--help"])

    assert rc == 0, err
    assert out.startswith("usage: ciml ")
    for text in ("--data-path", "CIML_DATA_PATH", "--debug", "--version", "-q",
                 "plugin list", "plugin show", "complete", "help"):
        assert text in out
    assert "List the installed plugin components of every kind" in out


def test_help_for_a_command(run_ciml):
    rc, out, err = run_ciml(["help", "plugin", "list"])
    assert rc == 0, err
    assert "usage: ciml plugin list" in out
    assert "--kind KIND" in out
    assert "-f {csv,json,table,value,yaml}" in out
    # ciml's own commands are not "provided by a plugin".
    assert "provided by" not in out


def test_command_help_option(run_ciml):
    rc, out, err = run_ciml(["plugin", "show", "--help"])
    assert rc == 0, err
    assert "usage: ciml plugin show" in out
    assert "KIND" in out and "NAME" in out


def test_unknown_command_suggests(run_ciml):
    rc, out, err = run_ciml(["plugin", "lst"])
    assert rc != 0
    assert "plugin list" in out + err


def test_bad_option_value_exits_non_zero(run_ciml):
    rc, out, err = run_ciml(["plugin", "list", "-f", "xml"])
    assert rc == 2
    assert "invalid choice: 'xml'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("shell", ["bash", "none"])
def test_complete(run_ciml, shell):
    rc, out, err = run_ciml(["complete", "--shell", shell])
    assert rc == 0, err
    assert "plugin" in out
    assert "list show" in out


def test_complete_includes_command_options(run_ciml):
    rc, out, err = run_ciml(["complete"])
    assert rc == 0, err
    assert "_ciml()" in out
    plugin_list = [line for line in out.splitlines() if "cmds_plugin_list=" in line]
    assert plugin_list and "--kind" in plugin_list[0]


def test_quiet_and_verbose_are_accepted(run_ciml):
    for flag in ("-q", "-v", "-vv"):
        rc, out, err = run_ciml([flag, "plugin", "list", "-f", "value", "-c", "kind"])
        assert rc == 0, (flag, err)


# -- help with options before it -----------------------------------------------------


class CsvDirMetricSource(base.MetricSource):
    """Metrics from <directory>/<run id>.csv"""

    name = "csvdir"
    parameters = (base.Parameter("directory", required=True, help="folder of CSV files"),)

    def fetch(self, run):
        raise NotImplementedError

    def parse(self, data, run):
        raise NotImplementedError


class CsvDirPlugin:
    @hookimpl
    def ciml_register_metric_sources(self, register):
        register(CsvDirMetricSource)


@pytest.fixture
def csvdir():
    manager = plugins.PluginManager()
    manager.add_plugin(CsvDirPlugin(), "csvdir", distribution="ciml-csvdir")
    plugins.reset_manager(manager)
    return manager


@pytest.mark.parametrize("argv", [
    ["cache-data", "--metric-source", "csvdir", "--help"],
    ["cache-data", "--build-name", "x", "--metric-source=csvdir", "-h"],
    ["help", "cache-data", "--metric-source", "csvdir"],
])
def test_help_after_options_shows_the_chosen_plugin_options(run_ciml, csvdir, argv):
    rc, out, err = run_ciml(argv)

    assert rc == 0, err
    assert out.startswith("usage: ciml cache-data")
    assert "metric source options (csvdir):" in out
    assert "--directory DIRECTORY" in out
    # dstat is not chosen: its options are not shown.
    assert "--paths" not in out


def test_help_without_a_choice_shows_every_plugin_option(run_ciml, csvdir):
    rc, out, err = run_ciml(["cache-data", "--limit", "3", "--help"])

    assert rc == 0, err
    assert "metric source options:" in out
    assert "--directory" in out and "--paths" in out


def test_help_with_an_unknown_plugin_says_which_exist(run_ciml, csvdir):
    rc, out, err = run_ciml(["cache-data", "--metric-source", "csvdri", "--help"])

    assert rc == 1
    assert "unknown metric source 'csvdri'" in err
    assert "did you mean 'csvdir'?" in err


def test_only_the_command_that_runs_is_imported(tmp_path):
    import json
    import subprocess
    import sys

    code = (
        "import contextlib, io, json, sys\n"
        "from ciml.shell import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    rc = main(['--data-path', {str(tmp_path)!r}, 'dataset', 'list', '-f', 'json'])\n"
        "print(json.dumps([rc, sorted(m for m in sys.modules\n"
        "                             if m.startswith('ciml.commands.'))]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    rc, modules = json.loads(out)
    assert rc == 0
    # complete is added by the app itself; base is what every command uses.
    assert set(modules) <= {"ciml.commands.base", "ciml.commands.complete",
                            "ciml.commands.dataset"}
    assert "ciml.commands.dataset" in modules
