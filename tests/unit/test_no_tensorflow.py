"""Loading every plugin and every command must not import TensorFlow.

Each check runs in a fresh interpreter, because this test process may
already have imported TensorFlow for another test.
"""

import json
import subprocess
import sys
import textwrap

import pytest


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
                            if m.split(".")[0] in ("tensorflow", "keras", "lightgbm",
                                                   "dask", "distributed")),
        }))
    """)

    assert result["rc"] == 0, result["err"]
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
                            if m.split(".")[0] in ("tensorflow", "keras", "lightgbm",
                                                   "dask", "distributed")),
        }))
    """)
    assert result["heavy"] == []
    assert result["failures"] == []


def test_train_model_device_choice_is_the_estimators_not_the_core(tmp_path):
    """--gpu/--no-gpu reach the estimator's gpu parameter; ciml.model imports no TensorFlow."""
    result = _run(f"""
        import json, sys
        sys.modules["tensorflow"] = None  # any import of it fails
        from ciml.base import Parameter, parse_bool
        from ciml.experiment import Experiment
        from ciml.hookspecs import hookimpl
        from ciml.model import train_model
        from ciml.plugins import get_manager
        from ciml.testing import make_dataset
        from ciml.testing.estimators import NearestCentroidEstimator

        seen = []

        class DeviceEstimator(NearestCentroidEstimator):
            name = "device-centroid"
            parameters = NearestCentroidEstimator.parameters + (
                Parameter("gpu", parse_bool, None, "device"),)

            def fit(self, X, y, **kwargs):
                seen.append(self.gpu)
                return super().fit(X, y, **kwargs)

        class Plugin:
            @hookimpl
            def ciml_register_estimators(self, register):
                register(DeviceEstimator)

        get_manager().add_plugin(Plugin(), "device-test")
        root = {str(tmp_path)!r}
        make_dataset(root, "ds", n=30)
        Experiment.create("e", "device-centroid").save(root)
        train_model(root, "ds", "e", gpu=False)
        train_model(root, "ds", "e")
        print(json.dumps({{"seen": seen}}))
    """)
    assert result["seen"] == [False, None]


def test_predicting_with_gbdt_never_imports_tensorflow(tmp_path):
    """``ciml predict`` with a gbdt model needs neither TensorFlow nor LightGBM's Python package.

    A cached run is read as the arrays the dataset was built from: no
    pandas, no zarr (the fitted scaler is read from its chunk), no
    lightgbm package (the C library predicts), no scipy, no SQLAlchemy
    (the local raw cache's index is read with sqlite3).  A dstat file
    still goes through the dstat reader (pandas).
    """
    pytest.importorskip("lightgbm")
    import gzip

    from ciml.base import FetchedMetrics
    from ciml.cache import RawCache
    from ciml.dataset import build_dataset
    from ciml.experiment import Experiment
    from ciml.generator import synthetic_dstat
    from ciml.model import train_model
    from ciml.paths import DataPath
    from ciml.records import FAILED, PASSED, RunRecord
    from ciml_plugins.metrics.dstat import parse_dstat_arrays

    root = str(tmp_path / "data")
    cache = RawCache(DataPath(root))
    for i in range(25):
        failed = i % 3 == 0
        run = RunRecord(id=f"run-{i:02d}", build_name="tempest-full",
                        status=FAILED if failed else PASSED, source="test")
        data = synthetic_dstat("0.7.3", rows=90, seed=i,
                               cause="oom" if failed else "passed").encode()
        cache.store(run, FetchedMetrics(name="dstat-csv_log.txt", data=data, url="test:"),
                    parse_dstat_arrays(data))
    cache.close()
    build_dataset(root, "ds", "tempest-full", features_regex=r"^(cpu_(usr|sys|idl|wai)|mem_)",
                  aggregation_functions=("mean", "max"), seed=0, executor="serial",
                  slicer=":24")
    Experiment.create("gb", "gbdt", {"trees": 5, "min_data_in_leaf": 2}).save(root)
    train_model(root, "ds", "gb")
    run_file = tmp_path / "dstat-csv_log.txt.gz"
    run_file.write_bytes(gzip.compress(synthetic_dstat("0.7.2", rows=90, seed=99).encode()))

    heavy = {"tensorflow", "keras", "lightgbm", "zarr", "matplotlib", "pandas", "scipy",
             "narwhals", "sqlalchemy", "dask"}
    results = {}
    for what, ref in (("cached", "run-24"), ("file", str(run_file))):
        results[what] = _run(f"""
            import contextlib, io, json, sys
            from ciml.shell import main

            out = io.StringIO()
            err = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(["--data-path", {root!r}, "predict", "--dataset", "ds",
                           "--experiment", "gb", "--no-store", {ref!r}, "-f", "json"])
            print(json.dumps({{
                "rc": rc, "err": err.getvalue(), "rows": json.loads(out.getvalue() or "[]"),
                "loaded": sorted({{m.split(".")[0] for m in sys.modules}}
                                 & set({sorted(heavy)!r})),
            }}))
        """)
    for result in results.values():
        assert result["rc"] == 0, result["err"]
        assert [row["predicted"] for row in result["rows"]] in (["passed"], ["failed"])
    assert results["cached"]["loaded"] == []
    assert results["file"]["loaded"] == ["pandas"]
