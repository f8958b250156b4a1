"""A real third-party package, pip-installed: ciml finds it, lists it and uses it.

``tests/example_plugin`` (distribution ``ciml-example``) is installed into
the environment running the tests, exactly as a user would install a
plugin, and removed at the end.  Everything is then checked from fresh
interpreters, because stevedore and importlib keep the entry points they
have seen for the life of a process.
"""

import importlib.metadata
import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "example_plugin"

COMPONENTS = {
    ("result-source", "jsonl"): "ciml_example.sources",
    ("metric-source", "csv"): "ciml_example.sources",
    ("normalizer", "clip"): "ciml_example.normalizer",
    ("estimator", "majority"): "ciml_example.estimator",
    ("trigger", "lines"): "ciml_example.trigger",
}


def _installed():
    try:
        return importlib.metadata.distribution("ciml-example").version
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory):
    """Install ciml-example for this module's tests; uninstall unless it was there."""
    was_installed = _installed() is not None
    # pip builds in the source folder: build a copy, so that no stale
    # build/ or egg-info is left in the tree for the next build to reuse.
    src = tmp_path_factory.mktemp("example-build") / "ciml-example"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-cache-dir", str(src)],
        capture_output=True, text=True, timeout=300, cwd=src.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield
    finally:
        if not was_installed:
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes",
                            "ciml-example"], capture_output=True, text=True, timeout=300)


def _python(code, cwd):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def runs_file(tmp_path):
    lines = [
        {"id": "r1", "build_name": "job", "status": "passed", "build_uuid": "u1",
         "start": "2026-01-01T10:00:00+00:00", "duration": 600,
         "metadata": {"node_provider": "rax-dfw"}},
        {"id": "r2", "build_name": "job", "status": "failed",
         "start": "2026-01-01T11:00:00", "metadata": {"node_provider": "ovh-gra1"}},
        {"id": "r3", "build_name": "other", "status": "passed"},
        {"id": "r4", "build_name": "job", "status": "passed",
         "start": "2026-01-02T10:00:00+00:00", "metadata": {"node_provider": "rax-dfw"}},
    ]
    path = tmp_path / "runs.jsonl"
    path.write_text("# a comment\n\n" + "\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_plugin_list_attributes_every_component(example_installed, run_ciml_subprocess):
    rc, out, err = run_ciml_subprocess(["plugin", "list", "-f", "json"])

    assert rc == 0, err
    entries = json.loads(out)
    mine = {(e["kind"], e["name"]): e for e in entries
            if e["distribution"] == "ciml-example"}
    for key, module in COMPONENTS.items():
        assert key in mine, f"{key} missing from {sorted(mine)}"
        assert mine[key]["module"] == module
        assert mine[key]["version"] == "1.0.0"
        assert mine[key]["description"]
    assert mine[("command", "example runs")]["module"] == "ciml_example.commands"
    assert mine[("command", "example runs")]["description"] == (
        "List the runs of a JSON-Lines file, through the jsonl result source")
    assert "failed to load" not in err


def test_version_lists_the_distribution(example_installed, run_ciml_subprocess):
    rc, out, err = run_ciml_subprocess(["--version"])
    assert rc == 0, err
    assert "plugins from ciml-example 1.0.0" in out


@pytest.mark.parametrize("kind,name", sorted(COMPONENTS))
def test_plugin_show(example_installed, run_ciml_subprocess, kind, name):
    rc, out, err = run_ciml_subprocess(["plugin", "show", kind, name, "-f", "json"])
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["distribution"] == "ciml-example"
    assert shown["plugin"] == "example"
    assert shown["details"]


def test_command(example_installed, run_ciml_subprocess, runs_file):
    rc, out, err = run_ciml_subprocess(["example", "runs", runs_file, "-f", "json"])
    assert rc == 0, err
    assert [r["id"] for r in json.loads(out)] == ["r1", "r2", "r3", "r4"]

    rc, out, err = run_ciml_subprocess(
        ["example", "runs", runs_file, "--build-name", "job", "--limit", "2",
         "-f", "value", "-c", "id", "-c", "status"])
    assert rc == 0, err
    assert out.split() == ["r1", "passed", "r2", "failed"]

    rc, out, err = run_ciml_subprocess(["help", "example", "runs"])
    assert rc == 0, err
    assert "usage: ciml example runs" in out
    assert "This command is provided by the ciml-example plugin." in out


def test_command_error_is_one_line(example_installed, run_ciml_subprocess, tmp_path):
    rc, out, err = run_ciml_subprocess(["example", "runs", tmp_path / "nope.jsonl"])
    assert rc != 0
    assert "Traceback" not in err
    assert "cannot read runs from" in err


def test_components_through_ciml_loading_path(example_installed, tmp_path, runs_file):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "r1.csv").write_text(
        "time,cpu,mem\n"
        "2026-01-01T10:00:00Z,1,100\n"
        "2026-01-01T10:00:01Z,2,1000000\n"
        "2026-01-01T10:00:01Z,9,9\n"
        "2026-01-01T10:00:02Z,3,200\n")
    (metrics / "r2.csv").write_text("time,cpu\n1767261600,5\n1767261601,6\n")
    (metrics / "bad.csv").write_text("time,cpu\n2026-01-01T10:00:00Z,lots\n")
    (metrics / "r4.csv").write_text("time,cpu\n")
    (tmp_path / "ids.txt").write_text("r1\n\n# skip me\n{\"run_id\": \"r2\", "
                                      "\"build_name\": \"other\"}\n{broken\nr4")
    model_dir = tmp_path / "model"
    model_dir.mkdir()

    result = _python(f"""
        import json, pathlib
        import numpy as np, pandas as pd
        from ciml.errors import MetricsUnavailable, NotFoundError
        from ciml.plugins import get_manager
        from ciml.records import RunRecord

        m = get_manager()
        out = {{}}
        out["failures"] = [f.plugin + ": " + f.error for f in m.failures]

        source = m.get("result_source", "jsonl").from_options({{"path": {str(runs_file)!r}}})
        runs = list(source.list_runs("job"))
        out["runs"] = [r.id for r in runs]
        out["aware"] = all(r.start.tzinfo is not None for r in runs)
        out["filtered"] = [r.id for r in source.list_runs(
            "job", filters={{"node_provider": "rax-dfw"}})]
        out["balanced"] = [r.id for r in source.list_runs("job", balanced=True)]
        out["since"] = [r.id for r in source.list_runs(
            "job", since=pd.Timestamp("2026-01-01T10:30:00Z").to_pydatetime())]
        out["by_uuid"] = source.get_run("u1").id
        try:
            source.get_run("zz")
        except NotFoundError as exc:
            out["not_found"] = str(exc)

        metric = m.get("metric_source", "csv")(directory={str(metrics)!r})
        fetched, frame = metric.load(runs[0])
        out["frame"] = {{"columns": list(frame.columns), "rows": len(frame),
                         "tz": str(frame.index.tz), "dtypes": sorted(set(map(str, frame.dtypes))),
                         "increasing": bool(frame.index.is_monotonic_increasing
                                            and frame.index.is_unique),
                         "fetched": fetched.name}}
        epoch = metric.load(runs[1])[1]
        out["epoch_start"] = epoch.index[0].isoformat()
        reasons = []
        for rid in ("bad", "r4", "missing"):
            try:
                metric.load(RunRecord(id=rid, build_name="job", status="passed"))
            except MetricsUnavailable as exc:
                reasons.append(exc.reason)
        out["reasons"] = reasons

        clip_cls = m.get("normalizer", "clip")
        clip = clip_cls(lower_percentile=0, upper_percentile=50)
        clip.fit([frame])
        state = clip.get_state()
        out["clip_state"] = state
        replay = clip_cls(lower_percentile=0, upper_percentile=50).set_state(
            json.loads(json.dumps(state)))
        out["clipped_mem"] = replay.transform(frame)["mem"].tolist()
        out["fixed"] = clip_cls(lower=0, upper=2).transform(frame)["cpu"].tolist()
        out["clip_stateful"] = clip_cls.stateful

        est_cls = m.get("estimator", "majority")
        X = np.zeros((5, 3, 2), dtype=np.float32)
        y = np.array([0, 1, 1, 1, 0])
        est = est_cls.from_options({{"smoothing": "1"}}).fit(
            X, y, classes=["passed", "failed", "oom"])
        est.save({str(model_dir)!r})
        loaded = est_cls.load({str(model_dir)!r})
        out["proba"] = loaded.predict_proba(X[:2]).round(4).tolist()
        out["predict"] = loaded.predict(X[:2]).tolist()
        out["saved"] = sorted(p.name for p in pathlib.Path({str(model_dir)!r}).iterdir())

        trigger = m.get("trigger", "lines")(path={str(tmp_path / "ids.txt")!r})
        trigger.setup(data_path=None, build_name="job")
        events = []
        trigger.run(events.append)
        out["events"] = [[e.run_id, e.build_name, e.trigger] for e in events]
        trigger.stop()
        trigger.stop()

        out["names"] = {{"/".join(k): m.info(*k).distribution for k in [
            ("result_source", "jsonl"), ("metric_source", "csv"), ("normalizer", "clip"),
            ("estimator", "majority"), ("trigger", "lines")]}}
        print(json.dumps(out))
    """, cwd=tmp_path)

    assert not [f for f in result["failures"] if f.startswith("example")]
    assert result["runs"] == ["r1", "r2", "r4"]
    assert result["aware"] is True
    assert result["filtered"] == ["r1", "r4"]
    assert result["balanced"] == ["r2", "r1", "r4"]
    assert result["since"] == ["r2", "r4"]
    assert result["by_uuid"] == "r1"
    assert "no run 'zz'" in result["not_found"]

    assert result["frame"] == {"columns": ["cpu", "mem"], "rows": 3, "tz": "UTC",
                               "dtypes": ["float64"], "increasing": True,
                               "fetched": "r1.csv"}
    assert result["epoch_start"] == "2026-01-01T10:00:00+00:00"
    assert result["reasons"] == ["non-numeric", "header-only", "missing"]

    assert result["clip_state"] == {"lower_": {"cpu": 1.0, "mem": 100.0},
                                    "upper_": {"cpu": 2.0, "mem": 200.0}}
    assert result["clipped_mem"] == [100.0, 200.0, 200.0]
    assert result["fixed"] == [1.0, 2.0, 2.0]
    assert result["clip_stateful"] is True

    # smoothing 1: counts 2+1, 3+1, 0+1 over 8
    assert result["proba"] == [[0.375, 0.5, 0.125]] * 2
    assert result["predict"] == [1, 1]
    assert result["saved"] == ["majority.json"]

    assert result["events"] == [["r1", "job", "lines"], ["r2", "other", "lines"],
                                ["r4", "job", "lines"]]
    assert set(result["names"].values()) == {"ciml-example"}


def test_example_sources_pass_the_conformance_kits(example_installed, tmp_path, runs_file):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    rows = "".join(f"2026-01-01T10:00:{s:02d}Z,{s % 7},{1000 + s}\n" for s in range(60))
    (metrics / "r1.csv").write_text("time,cpu,mem\n" + rows)
    result = _python(f"""
        import json
        from ciml.plugins import get_manager
        from ciml.testing.sources import check_metric_source, check_result_source

        m = get_manager()
        source = m.get("result_source", "jsonl")(path={str(runs_file)!r})
        check_result_source(source, "job")
        run = source.get_run("r1")
        check_metric_source(m.get("metric_source", "csv")(directory={str(metrics)!r}), run)
        print(json.dumps({{"ok": True}}))
    """, cwd=tmp_path)
    assert result == {"ok": True}


def test_trigger_reads_stdin(example_installed, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import json
            from ciml.plugins import get_manager
            trigger = get_manager().get("trigger", "lines")()
            trigger.setup(data_path=None)
            events = []
            trigger.run(events.append)
            print(json.dumps([e.run_id for e in events]))
        """)], input="a\nb\n\nc\n", capture_output=True, text=True, timeout=120,
        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["a", "b", "c"]


def test_plugin_check_passes(example_installed, run_ciml_subprocess):
    rc, out, err = run_ciml_subprocess(["plugin", "check", "ciml-example", "-f", "json"])

    assert rc == 0, err
    assert "problem" not in err
    rows = {(r["kind"], r["name"]) for r in json.loads(out)}
    assert rows == set(COMPONENTS)
