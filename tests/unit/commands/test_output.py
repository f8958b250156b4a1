"""Every command's output, in every format: snake_case keys, valid shell, native JSON/YAML."""

import datetime as dt
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from ciml.base import FetchedMetrics
from ciml.cache import RawCache
from ciml.commands.base import cell, column_name, shape_output
from ciml.hookspecs import hookimpl
from ciml.plugins import get_manager
from ciml.records import RunRecord
from ciml.testing import make_dataset
from ciml.testing.estimators import NearestCentroidEstimator

KEY = re.compile(r"^[a-z_][a-z0-9_]*$")


def test_column_name_is_a_shell_name():
    assert column_name("build name") == "build_name"
    assert column_name("config.build_name") == "config_build_name"
    assert column_name("roc_auc (failed)") == "roc_auc_failed"
    assert column_name("baseline roc_auc (failed)") == "baseline_roc_auc_failed"
    assert column_name("test-failure recall") == "test_failure_recall"
    assert column_name("95th") == "_95th"
    assert column_name("Raw File") == "raw_file"


def test_cell_keeps_structure_for_json_and_yaml_only():
    assert cell([1, 2], "json") == [1, 2] and cell((1, 2), "yaml") == [1, 2]
    assert cell({"a": 1}, "json") == {"a": 1}
    assert cell(0.5, "json") == 0.5
    assert cell(["a", "b"], "table") == "a, b"
    assert cell({"a": 1, "b": [2, 3]}, "value") == "a=1, b=2, 3"
    assert cell(None, "csv") == ""
    # Double quotes are cliff's to escape; these would still expand in "...".
    assert cell("$(rm -rf ~) `id` \\", "shell") == "\\$(rm -rf ~) \\`id\\` \\\\"


class CentroidPlugin:
    @hookimpl
    def ciml_register_estimators(self, register):
        register(NearestCentroidEstimator)


def _add_centroid():
    manager = get_manager()
    if "centroid-output" not in manager.plugins:
        manager.add_plugin(CentroidPlugin(), "centroid-output",
                           distribution="ciml-centroid", version="1.0")


@pytest.fixture(autouse=True)
def centroid():
    """A numpy-only estimator: models to show without TensorFlow."""
    _add_centroid()


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A data path with a cache, two datasets, an experiment and a trained model."""
    root = tmp_path_factory.mktemp("out") / "data"
    root.mkdir()
    from ciml.paths import DataPath

    dp = DataPath(root)
    with RawCache(dp) as cache:
        for i, provider in enumerate(["rax-dfw", "ovh-bhs1"]):
            run = RunRecord(id=f"run-{i}", build_name="tempest-full",
                            status="failed" if i else "passed",
                            start=dt.datetime(2024, 1, 1 + i, tzinfo=dt.timezone.utc),
                            metadata={"node_provider": provider})
            index = pd.date_range(run.start, periods=3, freq="s").as_unit("ns")
            frame = pd.DataFrame({"cpu_usr": np.ones(3), "mem_used": np.ones(3)},
                                 index=index)
            cache.store(run, FetchedMetrics("dstat-csv_log.txt.gz", b"x", "http://l/x"),
                        frame)
        cache.mark_unavailable(RunRecord(id="run-9", build_name="grenade", status="failed"),
                               "html", "an HTML page with $HOME in it")
    make_dataset(dp, "ds", n=40)
    make_dataset(dp, "prov", n=40, class_label="node_provider_all")
    yield dp
    shutil.rmtree(root, ignore_errors=True)


def _run(run_ciml, dp, *args):
    if "compare" in args:
        args = (*args, "--output", dp.root / "compare.png")
    rc, out, err = run_ciml(["--data-path", str(dp.root), *map(str, args)])
    assert rc == 0, err
    return out


#: One invocation of every display command that works offline.
COMMANDS = [
    ("plugin", "list"),
    ("plugin", "show", "estimator", "dnn"),
    ("run", "list"),
    ("run", "list", "--unavailable"),
    ("run", "show", "run-1"),
    ("run", "show", "run-9"),
    ("dataset", "list"),
    ("dataset", "show", "ds"),
    ("dataset", "show", "prov"),
    ("experiment", "list"),
    ("experiment", "show", "exp"),
    ("model", "list"),
    ("model", "show", "--dataset", "ds", "--experiment", "exp"),
    ("model", "show", "--dataset", "prov", "--experiment", "exp"),
    ("train-model", "--dataset", "ds", "--experiment", "exp"),
    ("model", "compare", "--dataset-experiment-label", "ds", "exp", "a b",
     "--dataset-experiment-label", "prov", "exp", "c", "-k", "macro_f1"),
]


@pytest.fixture(scope="module")
def trained(filled):
    _add_centroid()
    from ciml.shell import main

    for ds in ("ds", "prov"):
        args = ["--data-path", str(filled.root)]
        if ds == "ds":
            assert main([*args, "setup-experiment", "--experiment", "exp", "--estimator",
                         "nearest-centroid", "--temperature", "0.5", "-f", "value"]) == 0
        assert main([*args, "train-model", "--dataset", ds, "--experiment", "exp",
                     "-f", "value"]) == 0
    return filled


def _walk(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, value


def _check_structured(data, command):
    rows = data if isinstance(data, list) else [data]
    for row in rows:
        for key in row:
            assert KEY.match(key), (command, key)
        for path, value in _walk(row):
            last = path.split(".")[-1]
            if not isinstance(value, str) or last in ("fingerprint", "id") \
                    or last.endswith("version"):
                continue
            # A number or a list packed into a string is what this test exists for.
            assert not re.fullmatch(r"-?\d+(\.\d+)?", value), (command, path, value)
            assert not re.fullmatch(r"\w+=\d+(, \w+=\d+)+", value), (command, path, value)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_json_and_yaml_carry_numbers_and_lists(run_ciml, trained, command):
    data = json.loads(_run(run_ciml, trained, *command, "-f", "json"))
    _check_structured(data, command)
    again = yaml.safe_load(_run(run_ciml, trained, *command, "-f", "yaml"))
    if command[0] == "train-model":  # a new training: its time and seed differ
        assert set(again) == set(data)
    else:
        assert again == data


@pytest.mark.parametrize("command", [c for c in COMMANDS if c[1] == "show"
                                     or c[0] == "train-model"], ids=" ".join)
def test_shell_output_is_valid_shell(run_ciml, trained, command):
    out = _run(run_ciml, trained, *command, "-f", "shell", "--prefix", "ciml_")
    keys = re.findall(r'^ciml_(\w+)="', out, re.M)
    assert keys and len(keys) == len(set(keys))
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    # Every key is set by eval, and values come back as printed: nothing
    # in them ($HOME, `...`) is expanded.
    script = 'set -eu; eval "$(cat)"; ' + "; ".join(
        f'printf "%s\\0" "$ciml_{k}"' for k in keys)
    done = subprocess.run([bash, "-c", script], input=out, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    values = done.stdout.split("\0")[:-1]
    assert len(values) == len(keys)
    if command == ("run", "show", "run-9"):
        assert "with $HOME in it" in values[keys.index("message")]


def test_values_are_numbers_where_they_are_numbers(run_ciml, trained):
    models = json.loads(_run(run_ciml, trained, "model", "list", "-f", "json"))
    assert {type(m["accuracy"]) for m in models} == {float}
    datasets = json.loads(_run(run_ciml, trained, "dataset", "list", "-f", "json"))
    ds = {d["name"]: d for d in datasets}["ds"]
    assert ds["classes"] == ["passed", "failed"]
    assert set(ds["examples"]) == {"training", "dev", "test"}
    assert all(isinstance(n, int) for n in ds["examples"].values())
    shown = json.loads(_run(run_ciml, trained, "dataset", "show", "ds", "-f", "json"))
    assert shown["config_build_name"] == "tempest-full"
    assert isinstance(shown["training_shape"], list)
    runs = json.loads(_run(run_ciml, trained, "run", "list", "-f", "json"))
    assert runs[0]["build_name"] == "tempest-full" and runs[0]["samples"] == 3
    run = json.loads(_run(run_ciml, trained, "run", "show", "run-1", "-f", "json"))
    assert run["metric_columns"] == ["cpu_usr", "mem_used"]
    assert run["metadata"] == {"node_provider": "ovh-bhs1"}
    exp = json.loads(_run(run_ciml, trained, "experiment", "show", "exp", "-f", "json"))
    assert exp["params"]["temperature"] == 0.5


def test_one_key_spelling_across_commands(run_ciml, trained):
    runs = json.loads(_run(run_ciml, trained, "run", "list", "-f", "json"))
    datasets = json.loads(_run(run_ciml, trained, "dataset", "list", "-f", "json"))
    assert "build_name" in runs[0] and "build_name" in datasets[0]
    # -c takes the key as every format prints it.
    out = _run(run_ciml, trained, "run", "list", "-f", "value", "-c", "build_name")
    assert out.split() == ["tempest-full", "tempest-full"]


def test_model_show_table_honours_columns(run_ciml, trained):
    full = _run(run_ciml, trained, "model", "show", "--dataset", "ds", "--experiment", "exp")
    assert "macro_f1" in full and "failed recall" in full
    out = _run(run_ciml, trained, "model", "show", "--dataset", "ds", "--experiment", "exp",
               "-c", "accuracy", "-c", "failed_recall")
    rows = [line for line in out.splitlines() if line.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["accuracy", "failed recall"]
    rc, out, err = run_ciml(["--data-path", str(trained.root), "model", "show",
                             "--dataset", "ds", "--experiment", "exp", "-c", "bogus"])
    assert rc == 1 and "no such column: bogus" in err


def test_train_model_table_honours_columns(run_ciml, trained):
    out = _run(run_ciml, trained, "train-model", "--dataset", "ds", "--experiment", "exp",
               "-c", "macro_f1")
    rows = [line for line in out.splitlines() if line.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["macro_f1"]


def test_every_display_command_is_shaped():
    """The app routes every Lister/ShowOne it runs, built-in or not, through the helper."""
    from cliff.display import DisplayCommandBase

    from ciml.shell import CimlApp

    app = CimlApp()
    shaped = 0
    for name, ep in app.command_manager:
        factory = ep.load()
        if not (isinstance(factory, type) and issubclass(factory, DisplayCommandBase)):
            continue
        cmd = factory(app, None)
        app.prepare_to_run_command(cmd)
        assert getattr(cmd, "_ciml_shaped", False), name
        shaped += 1
    assert shaped >= 15
    assert shape_output(cmd) is cmd  # idempotent
