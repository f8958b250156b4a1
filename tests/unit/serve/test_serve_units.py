"""``ciml serve``'s parts that need no server: lazy imports, tokens, settings, helpers."""

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

WEB = ("fastapi", "uvicorn", "starlette", "jinja2", "prometheus_client", "multipart")


def test_help_and_command_loading_leave_the_web_stack_unloaded():
    code = textwrap.dedent("""
        import contextlib, importlib.metadata, io, json, sys
        from ciml.shell import main

        with contextlib.redirect_stdout(io.StringIO()), \\
                contextlib.redirect_stderr(io.StringIO()):
            try:
                main(["--help"])
            except SystemExit:
                pass
        for ep in importlib.metadata.entry_points(group="ciml.cli"):
            ep.load()
        print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(%r))))
    """ % (WEB,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_token_file_is_made_private_once_and_reused(tmp_path, caplog):
    from ciml.commands.serve import make_token_file, read_token

    path = tmp_path / "state" / "serve-token"
    token = make_token_file(str(path))
    assert len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_token(str(path)) == token
    # A second server starting later finds the first one's token.
    assert make_token_file(str(path)) == token
    assert [p.name for p in path.parent.iterdir()] == ["serve-token"]
    os.chmod(path, 0o640)
    read_token(str(path))
    assert "every user can read" not in caplog.text
    os.chmod(path, 0o644)
    read_token(str(path))
    assert "every user can read" in caplog.text


def test_token_file_errors_are_one_line(tmp_path):
    from ciml.commands.serve import read_token
    from ciml.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot read the token file"):
        read_token(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_token(str(empty))


def test_settings_travel_to_worker_processes(tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    from ciml.paths import DataPath
    from ciml.serve.app import ServeSettings, app_from_environment

    settings = ServeSettings(data_path=DataPath(tmp_path), token="tok", protect_reads=True,
                             trusted_origins=("https://ciml.example.org",),
                             session_secret=b"k" * 32, max_upload=1234, cache_ttl=0.5)
    env = settings.to_environment()
    assert "tok" not in env["CIML_SERVE_SETTINGS"]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = app_from_environment()
    rebuilt = app.state.ciml.settings
    assert rebuilt.token == "tok" and rebuilt.protect_reads and rebuilt.max_upload == 1234
    assert rebuilt.cache_ttl == 0.5 and app.state.ciml.copies.ttl == 0.5
    assert rebuilt.trusted_origins == ("https://ciml.example.org",)
    assert app.state.ciml.secret == b"k" * 32
    assert str(rebuilt.data_path.root) == str(tmp_path)


def test_only_local_redirects_after_login():
    pytest.importorskip("fastapi")
    from ciml.serve.pages import _local

    assert _local("/runs/x?y=1") == "/runs/x?y=1"
    for bad in ("https://evil.example/", "//evil.example/", "javascript:alert(1)", "runs"):
        assert _local(bad) == "/", bad


def test_serve_refuses_watch_with_processes_and_without_a_dataset(run_ciml, data_path):
    rc, _, err = run_ciml(["--data-path", str(data_path.root), "serve", "--watch",
                           "--dataset", "x", "--processes", "2"])
    assert rc == 1 and "--watch runs in one process" in err
    rc, _, err = run_ciml(["--data-path", str(data_path.root), "serve", "--watch"])
    assert rc == 1 and "--watch needs --dataset" in err


def test_serve_reads_its_config_table(run_ciml, data_path):
    data_path.root.mkdir(parents=True, exist_ok=True)
    (data_path.root / "ciml.toml").write_text('[serve]\nprocesses = 2\n')
    rc, _, err = run_ciml(["--data-path", str(data_path.root), "serve", "--watch",
                           "--dataset", "x"])
    assert rc == 1 and "--watch runs in one process" in err
    # The command line wins over the file.
    rc, _, err = run_ciml(["--data-path", str(data_path.root), "serve", "--watch",
                           "--dataset", "x", "--processes", "1", "--port", "70000"])
    assert rc == 1 and "--port must be between 0 and 65535" in err
    (data_path.root / "ciml.toml").write_text('[serve]\ntrusted_origins = 3\n')
    rc, _, err = run_ciml(["--data-path", str(data_path.root), "serve"])
    assert rc == 1 and "trusted_origins" in err and "serve" in err


def test_serve_checks_the_cache_ttl(run_ciml, data_path):
    rc, _, err = run_ciml(["--data-path", str(data_path.root), "serve", "--cache-ttl", "-1"])
    assert rc == 1 and "--cache-ttl must be between 0 and 3600" in err
    data_path.root.mkdir(parents=True, exist_ok=True)
    (data_path.root / "ciml.toml").write_text('[serve]\ncache_ttl = 7200\n')
    rc, _, err = run_ciml(["--data-path", str(data_path.root), "serve"])
    assert rc == 1 and "--cache-ttl must be between 0 and 3600" in err
