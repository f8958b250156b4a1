"""Loading every plugin and every command must not import TensorFlow.

Each check runs in a fresh interpreter, because this test process may
already have imported TensorFlow for another test.
"""

import json
import subprocess
import sys
import textwrap


def _run(code):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_plugin_list_and_every_command_leave_tensorflow_unloaded():
    result = _run("""
        import contextlib, importlib.metadata, io, json, sys
        from ciml.shell import main
        from ciml.plugins import get_manager

        with contextlib.redirect_stdout(io.StringIO()), \\
                contextlib.redirect_stderr(io.StringIO()):
            rc = main(["plugin", "list", "-f", "json"])
        manager = get_manager()
        for info in manager.all():
            info.cls.description()
        commands, failed = [], {}
        for ep in importlib.metadata.entry_points(group="ciml.cli"):
            try:
                ep.load()
                commands.append(ep.name)
            except Exception as exc:
                failed[ep.name] = f"{type(exc).__name__}: {exc}"
        print(json.dumps({
            "rc": rc,
            "plugins": sorted(manager.plugins),
            "components": sum(1 for _ in manager.all()),
            "commands": commands,
            "failed": failed,
            "heavy": sorted(m for m in sys.modules
                            if m.split(".")[0] in ("tensorflow", "keras", "lightgbm")),
        }))
    """)

    assert result["rc"] == 0
    assert "plugin_list" in result["commands"]
    assert result["components"] > 0
    assert result["heavy"] == [], "imported at plugin/command load: " + ", ".join(
        result["heavy"][:5])


def test_every_command_entry_point_imports():
    result = _run("""
        import importlib.metadata, json
        failed = {}
        for ep in importlib.metadata.entry_points(group="ciml.cli"):
            try:
                ep.load()
            except Exception as exc:
                failed[ep.name] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(failed))
    """)
    assert result == {}


def test_help_leaves_tensorflow_unloaded():
    result = _run("""
        import contextlib, io, json, sys
        from ciml.shell import main

        with contextlib.redirect_stdout(io.StringIO()), \\
                contextlib.redirect_stderr(io.StringIO()):
            try:
                main(["--help"])
            except SystemExit:
                pass
        print(json.dumps(sorted(m for m in sys.modules
                                if m.split(".")[0] in ("tensorflow", "keras", "lightgbm"))))
    """)
    assert result == []


def test_plugin_modules_leave_tensorflow_unloaded():
    # Every plugin module, including those registered by other distributions.
    result = _run("""
        import json, sys
        from ciml.plugins import PluginManager
        manager = PluginManager()
        print(json.dumps({
            "failures": [f"{f.plugin}: {f.error}" for f in manager.failures],
            "heavy": sorted(m for m in sys.modules
                            if m.split(".")[0] in ("tensorflow", "keras", "lightgbm")),
        }))
    """)
    assert result["heavy"] == []
    assert result["failures"] == []
