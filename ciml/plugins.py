"""The plugin manager: stevedore finds plugin modules, pluggy calls their hooks.

Discovery is through the ``ciml.plugins`` entry-point group only; ciml's own
built-ins are listed there in its setup.cfg exactly as a third-party package
lists its plugins.  Loading a plugin imports its module (cheap by contract:
no TensorFlow at import time), registers it with pluggy, and calls the
registration hooks to fill a registry of components by kind and name.  ciml,
not pluggy, picks which component runs, by the name the user typed.
"""

import dataclasses
import difflib
import importlib.metadata
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pluggy
import stevedore

from ciml import hookspecs
from ciml.base import KINDS
from ciml.errors import PluginConflictError, UnknownPluginError

LOG = logging.getLogger(__name__)

NAMESPACE = "ciml.plugins"

#: The registration hook of each kind, and the lifecycle hooks (all the others).
REGISTRATION_HOOKS = tuple(hook for _, hook in KINDS.values())
HOOKS = tuple(sorted(name for name, obj in vars(hookspecs).items()
                     if name.startswith("ciml_") and callable(obj)))
LIFECYCLE_HOOKS = tuple(h for h in HOOKS if h not in REGISTRATION_HOOKS)


@dataclasses.dataclass
class PluginInfo:
    """One registered component, as ``ciml plugin list`` shows it."""

    kind: str
    name: str
    cls: type
    module: str
    plugin: str
    distribution: str | None
    version: str | None

    @property
    def description(self) -> str:
        return self.cls.description()  # type: ignore[attr-defined]


@dataclasses.dataclass
class LoadFailure:
    """A problem found while loading a plugin: what, why, and what to do.

    ``error`` says what is wrong, ``fix`` what the plugin's author (or the
    user) can do about it; ``message`` is the one line ciml prints.
    """

    plugin: str
    target: str
    distribution: str | None
    error: str
    fix: str = ""

    @property
    def message(self) -> str:
        text = (f"ciml plugin {self.plugin!r} ({self.target}) from "
                f"{self.distribution or 'an unknown distribution'}: {self.error}")
        return f"{text}; {self.fix}" if self.fix else text


@dataclasses.dataclass
class LifecycleHook:
    """A lifecycle hook a plugin implements, as ``ciml plugin list`` shows it."""

    hook: str
    module: str
    plugin: str
    distribution: str | None
    version: str | None
    description: str


def _entry_point_distributions() -> dict[tuple[str, str], tuple[str, str]]:
    """Map entry-point (name, value) to (distribution, version).

    stevedore's entry-point cache does not keep which distribution an entry
    point came from, so it is looked up once through importlib.metadata.
    """
    found = {}
    for dist in importlib.metadata.distributions():
        try:
            eps = dist.entry_points
        except Exception:  # a broken dist-info must not break ciml
            continue
        for ep in eps:
            if ep.group == NAMESPACE:
                found[(ep.name, ep.value)] = (dist.metadata["Name"], dist.version)
    return found


def _hook_arguments(function: Callable[..., Any]) -> list[str] | None:
    """The argument names a hook implementation takes (``None`` if unreadable)."""
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    return [p.name for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _unknown_hook_fix(name: str) -> str:
    close = difflib.get_close_matches(name, HOOKS, n=1, cutoff=0.6)
    fix = f"did you mean {close[0]!r}? " if close else ""
    return fix + "The ciml hooks are: " + ", ".join(HOOKS)


class _CheckedPluginManager(pluggy.PluginManager):
    """pluggy's manager, leaving out only the hooks of a plugin that are wrong.

    pluggy refuses a whole plugin for one hook it does not know (at
    ``check_pending``) or one whose arguments do not match: a misspelled
    ``ciml_prediction_mad`` would take a valid estimator registration in
    the same module down with it.  Here each wrong hook is reported, with
    what to do, and skipped; the plugin's other hooks work.
    """

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        #: Problems found by :meth:`parse_hookimpl_opts`, as (plugin object, error, fix).
        self.hook_problems: list[tuple[object, str, str]] = []

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None:
            return None
        if name not in HOOKS:
            self.hook_problems.append((
                plugin, f"implements {name!r}, which is not a ciml hook, so it would "
                        "never be called", _unknown_hook_fix(name)))
            return None
        spec = getattr(self.hook, name).spec
        takes = _hook_arguments(getattr(plugin, name))
        if spec is not None and takes is not None:
            extra = [a for a in takes if a not in spec.argnames]
            if extra:
                self.hook_problems.append((
                    plugin, f"hook {name!r} takes {', '.join(map(repr, extra))}, which "
                            "ciml does not pass",
                    f"it may take any of: {', '.join(spec.argnames) or '(nothing)'}"))
                return None
        return opts


class PluginManager:
    """Loads plugins and keeps the registry of components by kind and name.

    ``report`` logs each problem as a warning when it is found (``ciml
    plugin check`` collects them instead and prints each once).
    """

    def __init__(self, load_entry_points: bool = True, report: bool = True) -> None:
        self.pm = _CheckedPluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registry: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in KINDS}
        self.failures: list[LoadFailure] = []
        self.conflicts: dict[tuple[str, str], str] = {}
        #: plugin name -> (distribution, version)
        self.plugins: dict[str, tuple[str | None, str | None]] = {}
        #: plugin name -> its entry point's target (module), for messages.
        self.targets: dict[str, str] = {}
        self.report = report
        if load_entry_points:
            self.load_entry_points()

    @property
    def hook(self) -> Any:
        """pluggy's hook relay, for calling lifecycle hooks."""
        return self.pm.hook

    def _fail(self, failure: LoadFailure) -> None:
        self.failures.append(failure)
        if self.report:
            LOG.warning("%s", failure.message)

    def load_entry_points(self) -> None:
        dists = _entry_point_distributions()

        def on_failure(manager: Any, entry_point: Any, exc: BaseException) -> None:
            dist = dists.get((entry_point.name, entry_point.value), (None, None))[0]
            self._fail(LoadFailure(
                entry_point.name, entry_point.value, dist,
                f"cannot be imported: {type(exc).__name__}: {exc}",
                "install what it needs, or a version of the distribution that "
                "works with this ciml"))

        mgr = stevedore.ExtensionManager(
            NAMESPACE, invoke_on_load=False,
            on_load_failure_callback=on_failure)
        # Sorted so that registration, and so conflict messages, are stable.
        for ext in sorted(mgr.extensions, key=lambda e: e.name):
            dist, version = dists.get((ext.name, ext.entry_point.value), (None, None))
            try:
                self.add_plugin(ext.plugin, ext.name, distribution=dist, version=version,
                                target=str(ext.entry_point.value))
            except Exception as exc:
                # A registration hook that raises is reported like an import
                # failure: the rest keeps working.
                self.unregister(ext.name)
                self._fail(LoadFailure(
                    ext.name, ext.entry_point.value, dist,
                    f"a registration hook raised {type(exc).__name__}: {exc}",
                    "fix the hook; it should only call register()"))

    def add_plugin(self, plugin: object, name: str, distribution: str | None = None,
                   version: str | None = None, target: str | None = None) -> None:
        """Register one plugin (module or object) and collect its components.

        Used for entry points, and by tests to register a throwaway plugin.
        A hook that is not a ciml hook, or takes arguments ciml does not
        pass, is reported and left out; the plugin's other hooks work.
        """
        target = target or str(getattr(plugin, "__name__", type(plugin).__name__))
        self.targets[name] = target
        self.pm.hook_problems.clear()
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            # What parse_hookimpl_opts cannot see (a hookwrapper on a plain
            # hook, say) still refuses the whole plugin.
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._fail(LoadFailure(name, target, distribution, str(exc),
                                   "see the hook reference in the plugin author guide"))
            return
        for _, error, fix in self.pm.hook_problems:
            self._fail(LoadFailure(name, target, distribution, error, fix))
        self.pm.hook_problems.clear()
        self.plugins[name] = (distribution, version)
        for kind, (base, hook_name) in KINDS.items():
            hook_caller = getattr(self.pm.hook, hook_name)
            for impl in hook_caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                register = self._registrar(kind, base, name, target, distribution, version)
                impl.function(register=register)

    def _registrar(self, kind: str, base: type, plugin_name: str, target: str,
                   distribution: str | None, version: str | None
                   ) -> Callable[..., Any]:
        label = kind.replace("_", " ")
        article = "an" if label[0] in "aeiou" else "a"

        def register(cls: Any, name: str | None = None) -> Any:
            name = name or getattr(cls, "name", None)
            if not isinstance(cls, type) or not issubclass(cls, base):
                # Only this class is left out: the plugin's others still work.
                self._fail(LoadFailure(
                    plugin_name, target, distribution,
                    f"registered {cls!r} as {article} {label}, but it does not derive from "
                    f"ciml.base.{base.__name__}",
                    f"make it a subclass: class {getattr(cls, '__name__', 'X')}"
                    f"(ciml.base.{base.__name__})"))
                return cls
            if not name:
                self._fail(LoadFailure(
                    plugin_name, target, distribution,
                    f"registered {cls.__module__}.{cls.__name__} as {article} {label} without "
                    "a name", "set the class attribute name, or call "
                    "register(cls, name=...)"))
                return cls
            existing = self.registry[kind].get(name)
            if existing is not None and existing.cls is not cls:
                # Not fatal at load: the rest of ciml keeps working, and only
                # using the ambiguous name fails, saying which two to choose from.
                message = (
                    f"two {label}s are named {name!r}: "
                    f"{existing.cls.__module__}.{existing.cls.__name__} from "
                    f"{existing.distribution or 'an unknown distribution'} and "
                    f"{cls.__module__}.{cls.__name__} from "
                    f"{distribution or 'an unknown distribution'}; uninstall one")
                self.conflicts[(kind, name)] = message
                if self.report:
                    LOG.warning("%s", message)
                return cls
            if getattr(cls, "name", None) != name:
                # The registered name is the one saved in experiments and models.
                cls = type(cls.__name__, (cls,), {"name": name, "__doc__": cls.__doc__,
                                                  "__module__": cls.__module__})
            self.registry[kind][name] = PluginInfo(
                kind=kind, name=name, cls=cls, module=cls.__module__,
                plugin=plugin_name, distribution=distribution, version=version)
            return cls
        return register

    def lifecycle_hooks(self, plugin_name: str | None = None) -> list[LifecycleHook]:
        """The lifecycle hooks each plugin implements (of one plugin, if named)."""
        found = []
        for hook in LIFECYCLE_HOOKS:
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if plugin_name is not None and impl.plugin_name != plugin_name:
                    continue
                dist, version = self.plugins.get(impl.plugin_name, (None, None))
                doc = inspect.cleandoc(impl.function.__doc__ or "")
                found.append(LifecycleHook(
                    hook=hook, module=impl.function.__module__, plugin=impl.plugin_name,
                    distribution=dist, version=version,
                    description=doc.splitlines()[0] if doc else ""))
        return sorted(found, key=lambda h: (h.plugin, h.hook))

    def unregister(self, name: str) -> None:
        """Remove a plugin and its components (tests use this)."""
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        for kind in self.registry:
            self.registry[kind] = {n: i for n, i in self.registry[kind].items()
                                   if i.plugin != name}
        self.plugins.pop(name, None)
        self.targets.pop(name, None)

    def info(self, kind: str, name: str) -> PluginInfo:
        """The :class:`ciml.plugins.PluginInfo` of one component, or a helpful error."""
        if kind not in self.registry:
            raise UnknownPluginError("plugin kind", kind, self.registry)
        if (kind, name) in self.conflicts:
            raise PluginConflictError(self.conflicts[(kind, name)])
        try:
            return self.registry[kind][name]
        except KeyError:
            raise UnknownPluginError(kind, name, self.registry[kind]) from None

    def get(self, kind: str, name: str) -> type:
        """The class registered for a kind and name."""
        return self.info(kind, name).cls

    def names(self, kind: str) -> list[str]:
        return sorted(self.registry[kind])

    def all(self, kind: str | None = None) -> Iterator[PluginInfo]:
        kinds = [kind] if kind else list(self.registry)
        for k in kinds:
            if k not in self.registry:
                raise UnknownPluginError("plugin kind", k, self.registry)
            for name in sorted(self.registry[k]):
                yield self.registry[k][name]

    def call_lifecycle(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin; one plugin's error is logged only.

        pluggy stops at the first exception, so each implementation is called
        on its own: a broken reporter must not stop training or watching.
        """
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(**{a: kwargs[a] for a in impl.argnames})
            except Exception:
                LOG.exception("ciml plugin %r failed in %s", impl.plugin_name, hook_name)


def _canonical(name: str | None) -> str:
    """A distribution name as pip compares them (case, ``-``, ``_`` and ``.`` alike)."""
    return (name or "").lower().replace("_", "-").replace(".", "-")


def component_problems(info: PluginInfo) -> list[str]:
    """What a plugin's CI should hear about one registered component, each with its fix."""
    cls: Any = info.cls
    what = f"{info.kind.replace('_', ' ')} {info.name!r} ({cls.__module__}.{cls.__qualname__})"
    problems = []
    if not cls.description():
        problems.append(f"{what} has no docstring; write one: its first line is what "
                        "`ciml plugin list` shows")
    if inspect.isabstract(cls):
        missing = sorted(cls.__abstractmethods__)
        problems.append(f"{what} does not implement {', '.join(missing)}; define "
                        f"{'it' if len(missing) == 1 else 'them'} (see "
                        f"ciml.base.{KINDS[info.kind][0].__name__})")
    seen = set()
    for p in cls.parameters:
        if not p.name.isidentifier():
            problems.append(f"{what} declares the parameter {p.name!r}, which is not a "
                            "Python identifier; use letters, digits and underscores")
        if p.name in seen:
            problems.append(f"{what} declares the parameter {p.name!r} twice; keep one")
        seen.add(p.name)
        if p.default is not None:
            try:
                p.convert(p.default)
            except Exception as exc:
                problems.append(f"{what}: the default of {p.name!r} is refused by its own "
                                f"type ({exc}); fix the default or the type")
    return problems


@dataclasses.dataclass
class CheckReport:
    """What :func:`check_plugins` found: the components, the hooks, every problem."""

    components: list[PluginInfo]
    hooks: list[LifecycleHook]
    problems: list[str]


def check_plugins(distribution: str | None = None) -> CheckReport:
    """Load the installed plugins strictly (``ciml plugin check``).

    Every problem is reported once, with its fix: load failures, component
    declarations (:func:`component_problems`), name conflicts, TensorFlow
    imported at load time.  ``distribution`` limits the check to the
    plugins of one installed distribution.

    :raises ciml.errors.ConfigError: no such distribution has ciml plugins.
    """
    import sys

    from ciml.errors import ConfigError

    had_tensorflow = "tensorflow" in sys.modules
    # A manager of its own: the process-wide one logs as it loads, and each
    # problem is to be reported once.
    manager = PluginManager(report=False)
    names = sorted(manager.targets)
    failures = manager.failures
    if distribution:
        wanted = _canonical(distribution)
        names = [n for n in names if _canonical(manager.plugins.get(n, (None,))[0]) == wanted]
        failures = [f for f in failures if _canonical(f.distribution) == wanted]
        if not names and not failures:
            dists = sorted({d for d, _ in manager.plugins.values() if d}
                           | {f.distribution for f in manager.failures if f.distribution})
            raise ConfigError(
                f"no installed distribution {distribution!r} has ciml plugins (entry points "
                f"in the ciml.plugins group); distributions with plugins: "
                f"{', '.join(dists) or '(none)'}")
    problems = [f.message for f in failures]
    components = [i for i in manager.all() if i.plugin in names]
    for info in components:
        problems.extend(component_problems(info))
    for message in sorted(manager.conflicts.values()):
        if not distribution or _canonical(distribution) in _canonical(message):
            problems.append(message)
    if not had_tensorflow and "tensorflow" in sys.modules:
        problems.append("loading the plugins imported TensorFlow, which makes every ciml "
                        "command seconds slower; import it inside fit() and load()")
    hooks = [h for h in manager.lifecycle_hooks() if h.plugin in names]
    return CheckReport(components, hooks, problems)


_manager: PluginManager | None = None
_lock = threading.Lock()


def get_manager() -> PluginManager:
    """The process-wide plugin manager, loaded on first use."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = PluginManager()
        return _manager


def reset_manager(manager: PluginManager | None = None) -> None:
    """Replace the process-wide manager (tests; ``None`` reloads lazily)."""
    global _manager
    with _lock:
        _manager = manager
