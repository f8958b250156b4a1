"""``ciml plugin list`` and ``ciml plugin show``: parsers, returned rows, errors."""

import io
import json

import pytest

from ciml import base, plugins
from ciml.commands.plugin import PluginList, PluginShow
from ciml.errors import UnknownPluginError
from ciml.hookspecs import hookimpl
from ciml.shell import CimlApp


class CountingEstimator(base.Estimator):
    """Predicts by counting

    It counts, then it predicts.
    """

    name = "counting"
    parameters = (
        base.Parameter("epochs", int, default=5, help="Passes over the data"),
        base.Parameter("loss", default="hinge", choices=("hinge", "log")),
        base.Parameter("layers", int, multiple=True),
        base.Parameter("token", secret=True, default="s3cret"),
        base.Parameter("url", required=True),
    )

    def fit(self, X, y, *, classes, validation=None, log_dir=None, seed=None):
        return self

    def predict_proba(self, X):
        return [[1.0]]

    def save(self, path):
        pass

    @classmethod
    def load(cls, path):
        return cls()


class QuietTrigger(base.Trigger):
    """Waits quietly"""

    name = "quiet"

    def run(self, on_event):
        pass

    def stop(self):
        pass


class Plugin:
    @hookimpl
    def ciml_register_estimators(self, register):
        register(CountingEstimator)

    @hookimpl
    def ciml_register_triggers(self, register):
        register(QuietTrigger)


@pytest.fixture
def manager():
    mgr = plugins.PluginManager(load_entry_points=False)
    mgr.add_plugin(Plugin(), "counting-plugin", distribution="ciml-counting",
                   version="2.0")
    plugins.reset_manager(mgr)
    return mgr


@pytest.fixture
def app():
    app = CimlApp()
    app.stdout, app.stderr = io.StringIO(), io.StringIO()
    return app


# -- plugin list -----------------------------------------------------------------


COLUMNS = ("kind", "name", "module", "distribution", "version", "description")


def test_list_parser(app):
    parser = PluginList(app, None).get_parser("ciml plugin list")
    assert parser.parse_args([]).kind is None
    assert parser.parse_args(["--kind", "estimator"]).kind == "estimator"
    # cliff's formatters come with a Lister.
    parsed = parser.parse_args(["-f", "json", "-c", "name"])
    assert parsed.formatter == "json"
    assert parsed.columns == ["name"]


def test_list_returns_columns_and_rows(app, manager):
    cmd = PluginList(app, None)
    parsed = cmd.get_parser("ciml plugin list").parse_args([])

    columns, rows = cmd.take_action(parsed)

    assert columns == COLUMNS
    rows = list(rows)
    assert ("estimator", "counting", __name__, "ciml-counting", "2.0",
            "Predicts by counting") in rows
    assert ("trigger", "quiet", __name__, "ciml-counting", "2.0", "Waits quietly") in rows
    assert app.stderr.getvalue() == ""


def test_list_one_kind(app, manager):
    cmd = PluginList(app, None)
    parsed = cmd.get_parser("ciml plugin list").parse_args(["--kind", "trigger"])

    columns, rows = cmd.take_action(parsed)

    assert [r[:2] for r in rows] == [("trigger", "quiet")]


def test_list_accepts_hyphenated_kinds(app, manager):
    class ResultPlugin:
        @hookimpl
        def ciml_register_result_sources(self, register):
            class NoSource(base.ResultSource):
                """Nothing"""

                name = "none"
                list_runs = get_run = lambda self, *a, **k: None

            register(NoSource)

    manager.add_plugin(ResultPlugin(), "result")
    cmd = PluginList(app, None)
    parsed = cmd.get_parser("ciml plugin list").parse_args(["--kind", "result-source"])

    _, rows = cmd.take_action(parsed)

    assert [r[:2] for r in rows] == [("result-source", "none")]


def test_list_unknown_kind_is_a_user_error(app, manager):
    cmd = PluginList(app, None)
    parsed = cmd.get_parser("ciml plugin list").parse_args(["--kind", "estimater"])
    with pytest.raises(UnknownPluginError, match="did you mean 'estimator'"):
        cmd.take_action(parsed)


BROKEN_PLUGIN = '''
from ciml import base
from ciml.hookspecs import hookimpl


class NotAnEstimator(base.Normalizer):
    """Nope"""

    name = "nope"


class GoodEstimator(base.Estimator):
    """Good"""

    name = "good"
    fit = predict_proba = save = lambda self, *a, **k: None
    load = classmethod(lambda cls, path: cls())


@hookimpl
def ciml_register_estimators(register):
    register(NotAnEstimator)
    register(GoodEstimator)


@hookimpl
def ciml_prediction_mad(prediction):
    pass


@hookimpl
def ciml_model_trained(model_dir):
    """Announce the new model"""
'''


def test_list_reports_each_load_failure_once(run_ciml, fake_distribution):
    fake_distribution("ciml-broken", {"ciml.plugins": {"broken": "ciml_broken_plugin"}},
                      {"ciml_broken_plugin": BROKEN_PLUGIN})

    rc, out, err = run_ciml(["plugin", "list", "-f", "value", "-c", "kind", "-c", "name",
                             "-c", "distribution"])

    assert rc == 0, err
    assert err.count("does not derive from ciml.base.Estimator") == 1, err
    assert "ciml.base.estimator.Estimator" not in err
    assert err.count("did you mean 'ciml_prediction_made'?") == 1, err
    # The module's valid parts still work, and its lifecycle hook is listed.
    assert "estimator good ciml-broken" in out.splitlines()
    assert "hook ciml_model_trained ciml-broken" in out.splitlines()


def test_list_hooks_only(run_ciml, fake_distribution):
    fake_distribution("ciml-broken", {"ciml.plugins": {"broken": "ciml_broken_plugin"}},
                      {"ciml_broken_plugin": BROKEN_PLUGIN})

    rc, out, err = run_ciml(["plugin", "list", "--kind", "hook", "-f", "json"])

    assert rc == 0, err
    mine = [row for row in json.loads(out) if row["distribution"] == "ciml-broken"]
    assert mine == [{"kind": "hook", "name": "ciml_model_trained",
                     "module": "ciml_broken_plugin", "distribution": "ciml-broken",
                     "version": "1.0", "description": "Announce the new model"}]


def test_list_json(run_ciml, manager):
    rc, out, err = run_ciml(["plugin", "list", "-f", "json"])

    assert rc == 0, err
    data = json.loads(out)
    entry = {d["name"]: d for d in data if d["kind"] == "estimator"}["counting"]
    assert entry == {"kind": "estimator", "name": "counting", "module": __name__,
                     "distribution": "ciml-counting", "version": "2.0",
                     "description": "Predicts by counting"}


def test_list_value_and_columns(run_ciml, manager):
    rc, out, err = run_ciml(["plugin", "list", "--kind", "estimator", "-f", "value",
                             "-c", "name", "-c", "distribution"])
    assert rc == 0, err
    assert out.split() == ["counting", "ciml-counting"]


@pytest.mark.parametrize("fmt", ["table", "csv", "yaml"])
def test_list_other_formats(run_ciml, manager, fmt):
    rc, out, err = run_ciml(["plugin", "list", "-f", fmt])
    assert rc == 0, err
    assert "counting" in out and "Predicts by counting" in out


def test_list_shows_commands_from_other_distributions(run_ciml, fake_distribution):
    source = (
        "from cliff.command import Command\n"
        "class Hello(Command):\n"
        "    '''Say hello from a third-party package'''\n"
        "    def take_action(self, parsed_args):\n"
        "        self.app.stdout.write('hello\\n')\n")
    fake_distribution("ciml-hello", {"ciml.cli": {"hello_world": "ciml_hello_cmd:Hello"}},
                      {"ciml_hello_cmd": source})

    rc, out, err = run_ciml(["plugin", "list", "-f", "json"])

    assert rc == 0, err
    commands = [d for d in json.loads(out) if d["kind"] == "command"]
    assert {"kind": "command", "name": "hello world", "module": "ciml_hello_cmd",
            "distribution": "ciml-hello", "version": "1.0",
            "description": "Say hello from a third-party package"} in commands
    assert all(d["distribution"] != "ciml" for d in commands)
    rc, out, err = run_ciml(["hello", "world"])
    assert (rc, out) == (0, "hello\n")


# -- plugin show -----------------------------------------------------------------


def test_show_parser(app):
    parser = PluginShow(app, None).get_parser("ciml plugin show")
    parsed = parser.parse_args(["estimator", "counting"])
    assert (parsed.kind, parsed.name) == ("estimator", "counting")
    with pytest.raises(SystemExit):
        parser.parse_args(["estimator"])


def test_show_returns_description_and_parameters(app, manager):
    cmd = PluginShow(app, None)
    parsed = cmd.get_parser("ciml plugin show").parse_args(["estimator", "counting"])

    columns, data = cmd.take_action(parsed)
    shown = dict(zip(columns, data, strict=True))

    assert shown["kind"] == "estimator"
    assert shown["name"] == "counting"
    assert shown["description"] == "Predicts by counting"
    assert shown["details"] == "It counts, then it predicts."
    assert shown["distribution"] == "ciml-counting"
    assert shown["version"] == "2.0"
    assert shown["module"] == __name__
    assert shown["plugin"] == "counting-plugin"
    params = shown["parameters"].splitlines()
    assert params == [
        "--epochs (int) default 5: Passes over the data",
        "--loss (str) default hinge choices: hinge|log",
        "--layers (int, several)",
        "--token (str) default ****",
        "--url (str) required",
    ]
    assert "s3cret" not in repr(data)


def test_show_without_parameters(app, manager):
    cmd = PluginShow(app, None)
    columns, data = cmd.take_action(
        cmd.get_parser("x").parse_args(["trigger", "quiet"]))
    shown = dict(zip(columns, data, strict=True))
    assert shown["parameters"] == "(none)"
    assert shown["details"] == ""


def test_show_json(run_ciml, manager):
    rc, out, err = run_ciml(["plugin", "show", "estimator", "counting", "-f", "json"])
    assert rc == 0, err
    data = json.loads(out)
    assert data["name"] == "counting"
    assert "--epochs (int) default 5" in data["parameters"]


# -- user errors -----------------------------------------------------------------


def test_unknown_name_is_one_line_with_valid_names_and_closest_match(run_ciml, manager):
    rc, out, err = run_ciml(["plugin", "show", "estimator", "countin"])

    assert rc != 0
    assert out == ""
    assert err.strip().splitlines() == [
        "unknown estimator 'countin'; valid names: counting; did you mean 'counting'?"]
    assert "Traceback" not in err


def test_unknown_kind_is_one_line(run_ciml, manager):
    rc, out, err = run_ciml(["plugin", "show", "estimators", "counting"])
    assert rc != 0
    assert len(err.strip().splitlines()) == 1
    assert "did you mean 'estimator'?" in err


def test_debug_shows_the_traceback(run_ciml, manager):
    rc, out, err = run_ciml(["--debug", "plugin", "show", "estimator", "countin"])
    assert rc != 0
    assert "Traceback" in err
    assert "UnknownPluginError" in err


def test_unknown_name_from_a_real_process(run_ciml_subprocess):
    rc, out, err = run_ciml_subprocess(["plugin", "show", "normalizer", "scael"])
    assert rc != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "unknown normalizer 'scael'" in lines[0]
    assert "did you mean 'scale'?" in lines[0]


# -- plugin check ------------------------------------------------------------------


GOOD_PLUGIN = '''
from ciml import base
from ciml.hookspecs import hookimpl


class FineEstimator(base.Estimator):
    """Fine"""

    name = "fine"
    parameters = (base.Parameter("depth", base.optional(base.bounded_int(1, 64)), 8),)
    fit = predict_proba = save = lambda self, *a, **k: None
    load = classmethod(lambda cls, path: cls())


@hookimpl
def ciml_register_estimators(register):
    register(FineEstimator)


@hookimpl
def ciml_prediction_made(prediction):
    """Write each prediction as a JSON line"""
'''

BROKEN = {
    "misspelled-hook": (GOOD_PLUGIN + "\n@hookimpl\ndef ciml_prediction_mad(prediction):\n"
                        "    pass\n",
                        "did you mean 'ciml_prediction_made'?"),
    "wrong-base": (GOOD_PLUGIN.replace("register(FineEstimator)",
                                       "register(FineEstimator)\n    register(dict)"),
                   "does not derive from ciml.base.Estimator"),
    "wrong-arguments": (GOOD_PLUGIN.replace("def ciml_prediction_made(prediction):",
                                            "def ciml_prediction_made(prediction, extra):"),
                        "takes 'extra', which ciml does not pass"),
    "import-error": ("import ciml_no_such_dependency\n" + GOOD_PLUGIN,
                     "cannot be imported: ModuleNotFoundError"),
    "no-docstring": (GOOD_PLUGIN.replace('"""Fine"""', "pass"), "has no docstring"),
    "abstract": (GOOD_PLUGIN.replace("    fit = predict_proba", "    predict_proba"),
                 "does not implement fit"),
    "bad-default": (GOOD_PLUGIN.replace("(1, 64)), 8)", "(1, 64)), 99)"),
                    "the default of 'depth' is refused by its own type"),
}


def _install(fake_distribution, dist, source):
    module = "ciml_" + dist.replace("-", "_") + "_plugin"
    fake_distribution(dist, {"ciml.plugins": {dist: module}}, {module: source})


def test_check_a_clean_distribution(run_ciml, fake_distribution):
    _install(fake_distribution, "ciml-fine", GOOD_PLUGIN)

    rc, out, err = run_ciml(["plugin", "check", "ciml-fine", "-f", "json"])

    assert rc == 0, err
    assert "problem" not in err
    module = "ciml_ciml_fine_plugin"
    assert json.loads(out) == [
        {"kind": "estimator", "name": "fine", "module": module, "plugin": "ciml-fine",
         "distribution": "ciml-fine", "version": "1.0"},
        {"kind": "hook", "name": "ciml_prediction_made", "module": module,
         "plugin": "ciml-fine", "distribution": "ciml-fine", "version": "1.0"}]


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_reports_each_problem_once_and_fails(run_ciml, fake_distribution, case):
    source, expected = BROKEN[case]
    _install(fake_distribution, "ciml-fine", GOOD_PLUGIN)
    _install(fake_distribution, "ciml-broken", source.replace('name = "fine"',
                                                              'name = "broken"'))

    rc, out, err = run_ciml(["plugin", "check", "ciml-broken"])

    assert rc == 1, (out, err)
    problems = [line for line in err.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 1, err
    assert err.count(expected) == 1, err
    assert "1 problem found" in err
    # The clean distribution is fine on its own, and checking all finds the broken one.
    assert run_ciml(["plugin", "check", "ciml-fine"])[0] == 0
    rc, out, err = run_ciml(["plugin", "check"])
    assert rc == 1 and expected in err


def test_check_unknown_distribution(run_ciml, fake_distribution):
    _install(fake_distribution, "ciml-fine", GOOD_PLUGIN)

    rc, out, err = run_ciml(["plugin", "check", "ciml-nope"])

    assert rc != 0
    assert "no installed distribution 'ciml-nope' has ciml plugins" in err
    assert "ciml-fine" in err


def test_check_conflicting_names(run_ciml, fake_distribution):
    _install(fake_distribution, "ciml-fine", GOOD_PLUGIN)
    _install(fake_distribution, "ciml-twin", GOOD_PLUGIN)

    rc, out, err = run_ciml(["plugin", "check", "ciml-twin"])

    assert rc == 1
    assert "two estimators are named 'fine'" in err


def test_show_prints_readable_parameter_types(run_ciml, fake_distribution):
    _install(fake_distribution, "ciml-fine", GOOD_PLUGIN)

    rc, out, err = run_ciml(["plugin", "show", "estimator", "fine", "-f", "json"])

    assert rc == 0, err
    assert json.loads(out)["parameters"] == "--depth (int 1..64 or none) default 8"
