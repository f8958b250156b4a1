"""The plugin manager: registration by kind, conflicts, bad plugins, lifecycle hooks."""

import logging

import pytest

from ciml import base, plugins
from ciml.errors import PluginConflictError, UnknownPluginError
from ciml.hookspecs import hookimpl

# -- throwaway components, one per kind ------------------------------------------


class TinyResultSource(base.ResultSource):
    """Runs from nowhere"""

    name = "tiny"

    def list_runs(self, build_name, **kwargs):
        return iter(())

    def get_run(self, run_id):
        raise KeyError(run_id)


class TinyMetricSource(base.MetricSource):
    """Metrics from nowhere"""

    name = "tiny"

    def fetch(self, run):
        return base.FetchedMetrics("x", b"", "nowhere")

    def parse(self, data, run):
        return None


class TinyNormalizer(base.Normalizer):
    """Leaves frames alone"""

    name = "tiny"

    def transform(self, frame):
        return frame


class TinyEstimator(base.Estimator):
    """Knows nothing"""

    name = "tiny"

    def fit(self, X, y, *, classes, validation=None, log_dir=None, seed=None):
        return self

    def predict_proba(self, X):
        return [[1.0]]

    def save(self, path):
        pass

    @classmethod
    def load(cls, path):
        return cls()


class TinyTrigger(base.Trigger):
    """Never fires"""

    name = "tiny"

    def run(self, on_event):
        pass

    def stop(self):
        pass


TINY = {
    "result_source": TinyResultSource,
    "metric_source": TinyMetricSource,
    "normalizer": TinyNormalizer,
    "estimator": TinyEstimator,
    "trigger": TinyTrigger,
}


class AllKindsPlugin:
    """A plugin object implementing every registration hook."""

    @hookimpl
    def ciml_register_result_sources(self, register):
        register(TinyResultSource)

    @hookimpl
    def ciml_register_metric_sources(self, register):
        register(TinyMetricSource)

    @hookimpl
    def ciml_register_normalizers(self, register):
        register(TinyNormalizer)
        register(TinyNormalizer, name="tiny-alias")

    @hookimpl
    def ciml_register_estimators(self, register):
        register(TinyEstimator)

    @hookimpl
    def ciml_register_triggers(self, register):
        register(TinyTrigger)


@pytest.fixture
def manager():
    """A manager with no entry points loaded, installed as the process-wide one."""
    mgr = plugins.PluginManager(load_entry_points=False)
    plugins.reset_manager(mgr)
    return mgr


# -- registration ----------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(base.KINDS))
def test_register_each_kind(manager, kind):
    manager.add_plugin(AllKindsPlugin(), "tiny-plugin", distribution="ciml-tiny",
                       version="1.2")

    info = manager.info(kind, "tiny")
    assert info.cls is TINY[kind]
    assert info.kind == kind
    assert info.plugin == "tiny-plugin"
    assert info.distribution == "ciml-tiny"
    assert info.version == "1.2"
    assert info.module == __name__
    assert info.description == TINY[kind].__doc__
    assert manager.get(kind, "tiny") is TINY[kind]
    assert manager.names(kind) == (["tiny", "tiny-alias"] if kind == "normalizer"
                                   else ["tiny"])
    assert plugins.get_manager() is manager
    assert manager.plugins["tiny-plugin"] == ("ciml-tiny", "1.2")


def test_register_under_another_name_keeps_the_class_usable(manager):
    manager.add_plugin(AllKindsPlugin(), "tiny-plugin")

    cls = manager.get("normalizer", "tiny-alias")
    # The registered name is what experiments and datasets save.
    assert cls.name == "tiny-alias"
    assert issubclass(cls, TinyNormalizer)
    assert cls.description() == "Leaves frames alone"
    assert TinyNormalizer.name == "tiny"


def test_all_lists_every_kind_sorted(manager):
    manager.add_plugin(AllKindsPlugin(), "tiny-plugin")

    listed = [(i.kind, i.name) for i in manager.all()]
    assert listed == [
        ("result_source", "tiny"), ("metric_source", "tiny"),
        ("normalizer", "tiny"), ("normalizer", "tiny-alias"),
        ("estimator", "tiny"), ("trigger", "tiny")]
    assert [i.name for i in manager.all("normalizer")] == ["tiny", "tiny-alias"]


def test_unregister_removes_components(manager):
    manager.add_plugin(AllKindsPlugin(), "tiny-plugin")
    manager.unregister("tiny-plugin")

    assert manager.names("estimator") == []
    assert "tiny-plugin" not in manager.plugins


def test_registering_a_class_of_the_wrong_base_is_reported_once(manager, caplog):
    class Wrong:
        @hookimpl
        def ciml_register_estimators(self, register):
            register(TinyNormalizer)
            register(TinyEstimator)

    with caplog.at_level(logging.WARNING, logger="ciml.plugins"):
        manager.add_plugin(Wrong(), "wrong", distribution="ciml-wrong")

    (failure,) = manager.failures
    # The documented path, not the module the class happens to live in.
    assert "does not derive from ciml.base.Estimator" in failure.error
    assert "ciml.base.estimator" not in failure.message
    assert "as an estimator" in failure.error
    assert "class TinyNormalizer(ciml.base.Estimator)" in failure.fix
    assert caplog.text.count("does not derive from") == 1
    # Only the wrong class is left out.
    assert manager.get("estimator", "tiny") is TinyEstimator


def test_registering_without_a_name_is_an_error(manager):
    class Nameless(TinyEstimator):
        """No name"""

        name = None

    class Plugin:
        @hookimpl
        def ciml_register_estimators(self, register):
            register(Nameless)

    manager.add_plugin(Plugin(), "nameless")

    (failure,) = manager.failures
    assert "without a name" in failure.error
    assert "register(cls, name=...)" in failure.fix
    assert manager.names("estimator") == []


def test_unknown_name_says_valid_names_and_closest(manager):
    manager.add_plugin(AllKindsPlugin(), "tiny-plugin")

    with pytest.raises(UnknownPluginError) as exc:
        manager.get("estimator", "tinny")
    message = str(exc.value)
    assert "unknown estimator 'tinny'" in message
    assert "valid names: tiny" in message
    assert "did you mean 'tiny'?" in message


def test_unknown_kind(manager):
    with pytest.raises(UnknownPluginError, match="unknown plugin kind 'estimators'"):
        manager.get("estimators", "x")
    with pytest.raises(UnknownPluginError):
        list(manager.all("nope"))


# -- two distributions, one name -------------------------------------------------


def _estimator_plugin(cls):
    class Plugin:
        @hookimpl
        def ciml_register_estimators(self, register):
            register(cls, name="same")

    return Plugin()


def test_duplicate_name_from_two_distributions_is_a_conflict(manager, caplog):
    class OtherEstimator(TinyEstimator):
        """Another one"""

    manager.add_plugin(AllKindsPlugin(), "tiny-plugin", distribution="ciml-tiny")
    with caplog.at_level(logging.WARNING, logger="ciml.plugins"):
        manager.add_plugin(_estimator_plugin(TinyEstimator), "first", distribution="ciml-a")
        manager.add_plugin(_estimator_plugin(OtherEstimator), "second",
                           distribution="ciml-b")

    # Loading goes on; only using the ambiguous name fails, naming both.
    assert "two estimators are named 'same'" in caplog.text
    with pytest.raises(PluginConflictError) as exc:
        manager.get("estimator", "same")
    message = str(exc.value)
    assert "ciml-a" in message and "ciml-b" in message
    assert "TinyEstimator" in message and "OtherEstimator" in message
    assert manager.get("estimator", "tiny") is TinyEstimator


def test_duplicate_name_between_installed_distributions(fake_distribution):
    # The same check through real entry points, as pip would install them.
    source = (
        "from ciml import base\n"
        "from ciml.hookspecs import hookimpl\n"
        "class E(base.Estimator):\n"
        "    '''From {dist}'''\n"
        "    name = 'dup'\n"
        "    fit = predict_proba = save = lambda self, *a, **k: None\n"
        "    load = classmethod(lambda cls, path: cls())\n"
        "@hookimpl\n"
        "def ciml_register_estimators(register):\n"
        "    register(E)\n")
    fake_distribution("ciml-dup-a", {"ciml.plugins": {"dup_a": "ciml_dup_a"}},
                      {"ciml_dup_a": source.format(dist="a")})
    fake_distribution("ciml-dup-b", {"ciml.plugins": {"dup_b": "ciml_dup_b"}},
                      {"ciml_dup_b": source.format(dist="b")})

    manager = plugins.PluginManager()

    with pytest.raises(PluginConflictError) as exc:
        manager.get("estimator", "dup")
    assert "ciml-dup-a" in str(exc.value)
    assert "ciml-dup-b" in str(exc.value)


# -- broken plugins --------------------------------------------------------------


def test_misspelled_hook_is_reported_and_ciml_keeps_working(manager, caplog):
    class Misspelled:
        @hookimpl
        def ciml_register_estimator(self, register):  # missing the final "s"
            register(TinyEstimator)

    with caplog.at_level(logging.WARNING, logger="ciml.plugins"):
        manager.add_plugin(Misspelled(), "typo", distribution="ciml-typo")

    assert len(manager.failures) == 1
    failure = manager.failures[0]
    assert failure.plugin == "typo"
    assert failure.distribution == "ciml-typo"
    assert "'ciml_register_estimator', which is not a ciml hook" in failure.error
    assert "did you mean 'ciml_register_estimators'?" in failure.fix
    assert "ciml-typo" in caplog.text
    # The next plugin registers and check_pending passes.
    manager.add_plugin(AllKindsPlugin(), "tiny-plugin")
    assert manager.get("estimator", "tiny") is TinyEstimator
    assert len(manager.failures) == 1
    manager.pm.check_pending()


def test_misspelled_hook_leaves_the_rest_of_the_plugin_working(manager):
    # The plugin author's case: a valid registration beside a typo.
    class Plugin:
        @hookimpl
        def ciml_register_estimators(self, register):
            register(TinyEstimator)

        @hookimpl
        def ciml_prediction_mad(self, prediction):
            """Write predictions as JSON lines"""

    manager.add_plugin(Plugin(), "forest", distribution="ciml-forest")

    assert manager.get("estimator", "tiny") is TinyEstimator
    assert "forest" in manager.plugins
    (failure,) = manager.failures
    assert "did you mean 'ciml_prediction_made'?" in failure.message
    # Every valid hook is listed, so that the author can pick the right one.
    for hook in plugins.HOOKS:
        assert hook in failure.fix
    assert manager.lifecycle_hooks("forest") == []


def test_hook_with_wrong_arguments_is_reported(manager):
    class WrongArgs:
        @hookimpl
        def ciml_register_estimators(self, register, extra):
            register(TinyEstimator)

        @hookimpl
        def ciml_register_triggers(self, register):
            register(TinyTrigger)

    manager.add_plugin(WrongArgs(), "wrong-args")

    (failure,) = manager.failures
    assert failure.plugin == "wrong-args"
    assert "takes 'extra', which ciml does not pass" in failure.error
    assert "it may take any of: register" in failure.fix
    assert manager.names("estimator") == []
    assert manager.names("trigger") == ["tiny"]


def test_lifecycle_hooks_are_listed_per_plugin(manager):
    class Reporter:
        @hookimpl
        def ciml_prediction_made(self, prediction):
            """Append each prediction to a file"""

    manager.add_plugin(AllKindsPlugin(), "tiny-plugin")
    manager.add_plugin(Reporter(), "reporter", distribution="ciml-reporter", version="3")

    (hook,) = manager.lifecycle_hooks()
    assert (hook.hook, hook.plugin, hook.distribution, hook.version, hook.description) == (
        "ciml_prediction_made", "reporter", "ciml-reporter", "3",
        "Append each prediction to a file")
    assert hook.module == __name__
    assert manager.lifecycle_hooks("tiny-plugin") == []


def test_plugin_that_fails_to_import_is_a_warning(fake_distribution, caplog):
    good = (
        "from ciml import base\n"
        "from ciml.hookspecs import hookimpl\n"
        "class GoodTrigger(base.Trigger):\n"
        "    '''Good'''\n"
        "    name = 'good'\n"
        "    run = stop = lambda self, *a: None\n"
        "@hookimpl\n"
        "def ciml_register_triggers(register):\n"
        "    register(GoodTrigger)\n")
    fake_distribution("ciml-broken", {"ciml.plugins": {
        "broken": "ciml_broken_plugin", "missing": "ciml_no_such_module"}},
        {"ciml_broken_plugin": "import ciml_no_such_dependency\n"})
    fake_distribution("ciml-good", {"ciml.plugins": {"good": "ciml_good_plugin"}},
                      {"ciml_good_plugin": good})

    with caplog.at_level(logging.WARNING, logger="ciml.plugins"):
        manager = plugins.PluginManager()

    failures = {f.plugin: f for f in manager.failures}
    assert failures["broken"].distribution == "ciml-broken"
    assert "ciml_no_such_dependency" in failures["broken"].error
    assert failures["missing"].distribution == "ciml-broken"
    assert "ciml-broken" in caplog.text
    assert "ciml_no_such_dependency" in caplog.text
    assert manager.get("trigger", "good").__name__ == "GoodTrigger"
    assert manager.info("trigger", "good").distribution == "ciml-good"
    assert manager.plugins["good"] == ("ciml-good", "1.0")


def test_plugin_whose_registration_raises_is_reported(fake_distribution):
    # A class of the wrong kind from an installed plugin must not break ciml.
    bad = (
        "from ciml import base\n"
        "from ciml.hookspecs import hookimpl\n"
        "class NotAnEstimator:\n"
        "    '''Nope'''\n"
        "    name = 'nope'\n"
        "@hookimpl\n"
        "def ciml_register_estimators(register):\n"
        "    register(NotAnEstimator)\n")
    fake_distribution("ciml-bad", {"ciml.plugins": {"bad": "ciml_bad_plugin"}},
                      {"ciml_bad_plugin": bad})

    manager = plugins.PluginManager()

    failures = {f.plugin: f for f in manager.failures}
    assert failures["bad"].distribution == "ciml-bad"
    assert failures["bad"].target == "ciml_bad_plugin"
    assert "does not derive from ciml.base.Estimator" in failures["bad"].error
    assert "nope" not in manager.names("estimator")


def test_plugin_whose_registration_hook_raises_is_reported(fake_distribution):
    bad = (
        "from ciml.hookspecs import hookimpl\n"
        "@hookimpl\n"
        "def ciml_register_estimators(register):\n"
        "    raise RuntimeError('boom')\n")
    fake_distribution("ciml-boom", {"ciml.plugins": {"boom": "ciml_boom_plugin"}},
                      {"ciml_boom_plugin": bad})

    manager = plugins.PluginManager()

    failures = {f.plugin: f for f in manager.failures}
    assert "raised RuntimeError: boom" in failures["boom"].error
    assert "boom" not in manager.plugins


def test_builtin_plugins_load_cleanly():
    manager = plugins.PluginManager()

    builtin = [f for f in manager.failures if f.distribution == "ciml"]
    assert builtin == []
    assert all(dist == "ciml" for name, (dist, _) in manager.plugins.items()
               if name in {"subunit2sql", "zuul", "dstat", "normalizers", "keras", "gbdt",
                           "mqtt", "poll"})
    manager.pm.check_pending()


def test_get_manager_is_lazy_and_shared():
    plugins.reset_manager()
    first = plugins.get_manager()
    assert plugins.get_manager() is first
    plugins.reset_manager()
    assert plugins.get_manager() is not first


# -- lifecycle hooks -------------------------------------------------------------


LIFECYCLE_CALLS = {
    "ciml_run_cached": dict(run="RUN", data_path="DATA"),
    "ciml_dataset_built": dict(name="ds", path="PATH", summary={"examples": 3}),
    "ciml_model_trained": dict(dataset="ds", experiment="exp", model_dir="DIR",
                               metrics={"accuracy": 1.0}),
    "ciml_prediction_made": dict(prediction={"run_id": "r1", "predicted": "passed"}),
}


class Recorder:
    """A reporter plugin implementing every lifecycle hook."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def ciml_run_cached(self, run, data_path):
        self.calls.append(("ciml_run_cached", dict(run=run, data_path=data_path)))

    @hookimpl
    def ciml_dataset_built(self, name, path, summary):
        self.calls.append(("ciml_dataset_built", dict(name=name, path=path,
                                                      summary=summary)))

    @hookimpl
    def ciml_model_trained(self, dataset, experiment, model_dir, metrics):
        self.calls.append(("ciml_model_trained", dict(
            dataset=dataset, experiment=experiment, model_dir=model_dir, metrics=metrics)))

    @hookimpl
    def ciml_prediction_made(self, prediction):
        self.calls.append(("ciml_prediction_made", dict(prediction=prediction)))


class Exploder:
    """A reporter that fails every time."""

    @hookimpl
    def ciml_run_cached(self, run, data_path):
        raise RuntimeError("boom run")

    @hookimpl
    def ciml_dataset_built(self, name, path, summary):
        raise RuntimeError("boom dataset")

    @hookimpl
    def ciml_model_trained(self, dataset, experiment, model_dir, metrics):
        raise RuntimeError("boom model")

    @hookimpl
    def ciml_prediction_made(self, prediction):
        raise RuntimeError("boom prediction")


@pytest.mark.parametrize("hook_name", sorted(LIFECYCLE_CALLS))
def test_lifecycle_hooks_reach_every_plugin(manager, hook_name):
    first, second = Recorder(), Recorder()
    manager.add_plugin(first, "first")
    manager.add_plugin(second, "second")

    manager.call_lifecycle(hook_name, **LIFECYCLE_CALLS[hook_name])

    assert first.calls == [(hook_name, LIFECYCLE_CALLS[hook_name])]
    assert second.calls == first.calls


@pytest.mark.parametrize("hook_name", sorted(LIFECYCLE_CALLS))
def test_one_failing_lifecycle_plugin_does_not_stop_others(manager, hook_name, caplog):
    before, after = Recorder(), Recorder()
    manager.add_plugin(before, "before")
    manager.add_plugin(Exploder(), "exploder")
    manager.add_plugin(after, "after")

    with caplog.at_level(logging.ERROR, logger="ciml.plugins"):
        manager.call_lifecycle(hook_name, **LIFECYCLE_CALLS[hook_name])

    assert len(before.calls) == 1 and len(after.calls) == 1
    assert "'exploder' failed in " + hook_name in caplog.text
    assert "boom" in caplog.text


def test_lifecycle_hooks_through_pluggy(manager):
    recorder = Recorder()
    manager.add_plugin(recorder, "recorder")

    manager.hook.ciml_prediction_made(prediction={"run_id": "r"})

    assert recorder.calls == [("ciml_prediction_made", {"prediction": {"run_id": "r"}})]


def test_builtin_parameter_types_read_as_types():
    # plugin show and --help print a parameter's type: never a helper's name.
    manager = plugins.PluginManager()
    for info in manager.all():
        for p in info.cls.parameters:
            assert not p.type_name.startswith("_"), (info.name, p.name, p.type_name)
            assert p.type_name not in ("convert", "convert_optional", "<lambda>"), \
                (info.name, p.name)
