"""``ciml plugin new``: one package of each kind, pip-installed into a fresh venv, tested, used.

The venv is fresh (its own site-packages, where pip installs the five
packages) but sees the test run's interpreter's packages through a ``.pth``
file, so that nothing is downloaded: ciml, pytest and the build backend
come from there, and ``--no-deps --no-build-isolation --no-index`` keeps
pip offline.  Everything then runs in the venv's interpreter, as a plugin
author's CI would.
"""

import json
import pathlib
import random
import site
import subprocess
import sys

import pytest

KINDS = {
    "estimator": "forest",
    "normalizer": "maxabs",
    "metric-source": "csvdir",
    "result-source": "jsonl-runs",
    "trigger": "lines-file",
}


def _run(args, cwd, timeout=600):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin-new")
    env = root / "venv"
    rc, out, err = _run([sys.executable, "-m", "venv", "--without-pip", env], root)
    assert rc == 0, err
    python = env / "bin" / "python"
    rc, out, err = _run([python, "-c", "import site; print(site.getsitepackages()[0])"], root)
    assert rc == 0, err
    # addsitedir, not a bare path: it also runs the .pth files there (an
    # editable ciml is found through one).
    parents = [p for p in site.getsitepackages() if pathlib.Path(p).is_dir()]
    (pathlib.Path(out.strip()) / "ciml-test-parent.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in parents))
    return root, python


@pytest.fixture(scope="module")
def packages(venv):
    root, python = venv
    made = {}
    for kind, name in KINDS.items():
        rc, out, err = _run([python, "-m", "ciml.shell", "plugin", "new", kind, name,
                             "-f", "json"], root)
        assert rc == 0, err
        shown = json.loads(out)
        assert shown["distribution"] == f"ciml-{name}"
        made[kind] = pathlib.Path(shown["directory"])
        files = set(shown["files"].splitlines())
        package = f"ciml_{name.replace('-', '_')}"
        assert {"setup.cfg", "pyproject.toml", "README.rst", f"{package}/__init__.py",
                f"{package}/hooks.py"} <= files
    rc, out, err = _run([python, "-m", "pip", "install", "--quiet", "--no-deps",
                         "--no-build-isolation", "--no-index", *made.values()], root)
    assert rc == 0, out + err
    return made


def ciml(venv, *args):
    root, python = venv
    return _run([python, "-m", "ciml.shell", *args], root)


@pytest.mark.slow
def test_generated_packages_pass_their_own_tests(venv, packages):
    root, python = venv
    rc, out, err = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         *[p / "tests" for p in packages.values()]], root)
    assert rc == 0, out + err
    assert " passed" in out and "failed" not in out


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_generated_packages_are_installed_plugins(venv, packages, kind):
    name = KINDS[kind]
    rc, out, err = ciml(venv, "plugin", "check", f"ciml-{name}", "-f", "json")
    assert rc == 0, err
    assert json.loads(out) == [{
        "kind": kind, "name": name,
        "module": f"ciml_{name.replace('-', '_')}.{_module(kind)}",
        "plugin": f"ciml-{name}", "distribution": f"ciml-{name}", "version": "0.1.0"}]
    assert "problem" not in err

    rc, out, err = ciml(venv, "plugin", "show", kind, name, "-f", "json")
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["description"].endswith(f"(ciml-{name})")
    assert shown["details"]
    assert shown["parameters"] != "(none)"
    # Parameter types read as types, never as a helper function's name.
    assert "convert" not in shown["parameters"]


def _module(kind):
    return {"estimator": "estimator", "normalizer": "normalizer", "metric-source": "metrics",
            "result-source": "source", "trigger": "trigger"}[kind]


@pytest.mark.slow
def test_generated_sources_and_estimator_through_the_cli(venv, packages, tmp_path):
    rng = random.Random(0)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    lines = []
    for i in range(30):
        failed = i % 3 == 0
        run_id = f"run-{i:03d}"
        day, hour = 1 + i // 10, 10 + i % 10
        lines.append(json.dumps({
            "id": run_id, "build_name": "job", "status": "failed" if failed else "passed",
            "start": f"2026-01-{day:02d}T{hour}:00:00+00:00"}))
        rows = "".join(
            f"2026-01-{day:02d}T{hour}:{s // 60:02d}:{s % 60:02d}Z,"
            f"{(70 if failed else 20) + rng.random() * 10:.2f},{1e9 + rng.random() * 1e8:.0f}\n"
            for s in range(0, 600, 5))
        (metrics / f"{run_id}.csv").write_text("time,cpu,mem\n" + rows)
    runs = tmp_path / "runs.jsonl"
    runs.write_text("\n".join(lines) + "\n")
    data = ["--data-path", tmp_path / "ciml-data"]

    rc, out, err = ciml(venv, *data, "cache-data", "--build-name", "job",
                        "--source", "jsonl-runs", "--runs-file", runs,
                        "--metric-source", "csvdir", "--directory", metrics, "-f", "json")
    assert rc == 0, err
    summary = json.loads(out)
    assert (summary["cached"], summary["unavailable"]) == (30, 0), summary

    rc, out, err = ciml(venv, *data, "build-dataset", "--dataset", "ds", "--build-name", "job",
                        "--aggregation-functions", "mean", "max", "-f", "json")
    assert rc == 0, err
    rc, out, err = ciml(venv, *data, "setup-experiment", "--experiment", "nb",
                        "--estimator", "forest", "-o", "priors=uniform", "-f", "json")
    assert rc == 0, err
    rc, out, err = ciml(venv, *data, "train-model", "--dataset", "ds", "--experiment", "nb",
                        "-f", "json")
    assert rc == 0, err
    trained = json.loads(out)
    # The generated estimator learns the (easy) CPU signal.
    assert trained["accuracy"] == 1.0
    assert "tensorboard --logdir" not in err

    meta = json.loads((tmp_path / "ciml-data" / "models" / "ds" / "nb" /
                       "metadata.json").read_text())
    assert (meta["estimator"], meta["estimator_distribution"]) == ("forest", "ciml-forest")
