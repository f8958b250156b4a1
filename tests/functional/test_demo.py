"""``ciml demo`` end to end on a small history, and the commands it suggests."""

import json
import shlex
import sys

import pytest

from ciml.commands import demo

pytestmark = [pytest.mark.tensorflow, pytest.mark.slow]


def test_demo_runs_every_step_and_leaves_an_explorable_data_path(tmp_path, run_ciml_subprocess):
    root = tmp_path / "demo"
    rc, out, err = run_ciml_subprocess(
        ["--data-path", str(root), "demo", "--runs", "90", "--epochs", "3"], timeout=600)
    assert rc == 0, err[-3000:]
    for step in ("1. Generating", "2. Caching", "3. Building", "4. Building", "5. Building",
                 "6. Setting up", "7. Training", "8. Training", "9. Training",
                 "10. All models", "11. Predicting", "12. Plots", "Done in"):
        assert f"== {step}" in out, step
    assert "baseline" in out
    predicted = out.split("== 11. Predicting", 1)[1].split("== 12.", 1)[0]
    assert "| actual " in predicted and "unusual_features" in predicted
    assert "| why " in predicted and "(typ " in predicted and '"why":' in predicted
    for name, exp in (("demo-status", "demo-dnn"), ("demo-cause", "demo-gbdt"),
                      ("demo-provider", "demo-gbdt")):
        assert (root / "datasets" / name).is_dir()
        assert (root / "models" / name / exp / "metrics.json").is_file()
    assert list((root / "demo-plots").rglob("*.png"))
    assert list((root / "demo-plots" / "explained").glob("*.png"))
    assert list((root / "demo-plots").rglob("reliability.png"))

    # The suggested commands work as printed (ciml itself is run the test's way).
    explore, serve = out.split("Keep exploring:", 1)[1].split("in a browser", 1)
    suggested = explore.strip().splitlines()
    commands = [shlex.split(line) for line in suggested if " --data-path " in line]
    assert len(commands) == 5
    _check_serve_command(serve, root, "demo-cause")
    for argv in commands:
        if "watch" in argv:
            continue  # exercised below with a bounded run
        rc, cmd_out, cmd_err = run_ciml_subprocess(argv[1:], timeout=300)
        assert rc == 0, (argv, cmd_err[-2000:])
    model = json.loads(run_ciml_subprocess(
        ["--data-path", str(root), "model", "show", "--dataset", "demo-cause",
         "--experiment", "demo-gbdt", "-f", "json"])[1])
    assert set(model["baseline"]) >= {"accuracy", "macro_f1"}
    watch = next(argv for argv in commands if "watch" in argv)
    rc, watch_out, watch_err = run_ciml_subprocess(
        watch[1:] + ["--status-interval", "0", "--fetch-attempts", "1"], timeout=300)
    assert rc == 0, watch_err[-2000:]
    lines = [json.loads(line) for line in watch_out.splitlines() if line.startswith("{")]
    assert lines and all(line["dataset"] == "demo-cause" for line in lines)
    # Real predictions, not error records: of the last five runs, at most the
    # three the generator breaks (3% of 90) fail, and only for their broken file.
    predicted = [line for line in lines if line.get("predicted")]
    assert len(predicted) >= 2, watch_out
    # A run below the model's confidence floor is "uncertain", with its two candidates.
    assert all(line["predicted"] in line["probabilities"]
               or (line["predicted"] == "uncertain" and len(line["candidates"]) == 2)
               for line in predicted)
    assert all("explanation" in line for line in predicted)
    errors = [line for line in lines if not line.get("predicted")]
    assert len(errors) <= 3 and not any(e["reason"] == "url-refused" for e in errors), errors


def test_demo_refuses_a_history_too_small_to_split(run_ciml):
    rc, out, err = run_ciml(["demo", "--runs", "5"])
    assert rc != 0
    assert "at least 30" in err


def test_suggested_program_is_plain_ciml_only_when_path_finds_this_one(monkeypatch, tmp_path):
    fake = tmp_path / "bin" / "ciml"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(fake)])
    monkeypatch.setenv("PATH", "/nonexistent")
    assert demo._program() == str(fake)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert demo._program() == "ciml"


def test_demo_ci_github_serves_github_actions_and_prometheus(tmp_path, run_ciml_subprocess):
    root = tmp_path / "demo-gh"
    rc, out, err = run_ciml_subprocess(
        ["--data-path", str(root), "demo", "--ci", "github", "--runs", "60", "--epochs", "2",
         "--no-plots"], timeout=600)
    assert rc == 0, err[-3000:]
    for step in ("1. Generating", "2. Caching", "3. Building", "4. Building", "5. Building",
                 "6. Setting up", "7. Training", "10. All models", "11. Predicting",
                 "Done in"):
        assert f"== {step}" in out, step
    assert "--source github" in out and "--metric-source prometheus" in out
    cached = out.split("== 2. Caching", 1)[1].split("== 3.", 1)[0]
    assert "| source              | github" in cached
    # The four newest jobs were not cached: predict fetched them from both servers.
    predicted = out.split("== 11. Predicting", 1)[1].split("== Done", 1)[0]
    rows = [line for line in predicted.splitlines() if line.startswith("| 7")]
    assert len(rows) == 4 and all(("passed" in r or "failed" in r) for r in rows)
    # dnn on the time series, gbdt on the aggregates, as in the default demo.
    for name, exp in (("demo-gh-status", "demo-dnn"), ("demo-gh-conclusion", "demo-gbdt"),
                      ("demo-gh-runner-group", "demo-gbdt")):
        assert (root / "models" / name / exp / "metrics.json").is_file()
    # The raw cache keeps Prometheus's answers (packed: read them back as fetched).
    from ciml.cache import RawCache
    from ciml.paths import DataPath

    with RawCache(DataPath(root)) as cache:
        cached_run = cache.runs()[0]
        assert cache.info(cached_run.id)["fetched_name"] == "prometheus.json"
        kept = json.loads(cache.fetched_content(cached_run.id))
    assert kept["format"] == "ciml-prometheus-1", "the raw cache keeps Prometheus's answers"
    # The suggested commands work offline, the servers being gone.
    explore, serve = out.split("Keep exploring", 1)[1].split("in a browser", 1)
    suggested = [line for line in explore.strip().splitlines()[1:] if line.strip()][:-1]
    assert len(suggested) == 4, suggested
    _check_serve_command(serve, root, "demo-gh-status")
    for line in suggested:
        argv = shlex.split(line)
        rc, cmd_out, cmd_err = run_ciml_subprocess(argv[1:], timeout=300)
        assert rc == 0, (argv, cmd_err[-2000:])


def _check_serve_command(text, root, model):
    """The demo's last lines: ``ciml --data-path ROOT serve --port 8080`` and its URL.

    The same command, on a free port, serves a home page that lists the
    demo's predictions.
    """
    import urllib.request

    from serve_helpers import serving

    from ciml.paths import DataPath

    lines = [line.strip() for line in text.strip().splitlines()]
    argv = shlex.split(lines[1])
    assert argv[1:] == ["--data-path", str(root), "serve", "--port", str(demo.SERVE_PORT)]
    assert lines[2] == f"then open http://127.0.0.1:{demo.SERVE_PORT}/"
    with serving(DataPath(root)) as url, urllib.request.urlopen(url + "/") as resp:
        page = resp.read().decode()
    assert model in page
