"""ciml.executor without a cluster: the option, the environment, the errors."""

import json
import subprocess
import sys
import textwrap

import pytest

from ciml import executor


def test_no_address_means_no_cluster():
    assert executor.connect(None) is None
    assert executor.connect("") is None


def test_without_dask_installed_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(executor.SchedulerError, match=r"pip install 'ciml\[dask\]'"):
        executor.connect("tcp://127.0.0.1:8786")


@pytest.mark.parametrize("command", ["cache-data", "build-dataset", "predict"])
def test_the_option_is_offered_and_dask_stays_unimported(command):
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from ciml.shell import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            try:
                main(["{command}", "--help"])
            except SystemExit:
                pass
        print(json.dumps({{"help": out.getvalue(),
                          "dask": sorted(m for m in sys.modules
                                         if m.split(".")[0] in ("dask", "distributed"))}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "--scheduler ADDRESS" in result["help"] and "CIML_DASK_SCHEDULER" in result["help"]
    assert result["dask"] == []


def test_worker_cached_makes_each_thing_once():
    made = []
    key = ("test", object())
    first = executor.worker_cached(key, lambda: made.append(1) or len(made))
    again = executor.worker_cached(key, lambda: made.append(1) or len(made))
    assert first == again == 1 and made == [1]
