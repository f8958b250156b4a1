"""The plugin manager: stevedore finds plugin modules, pluggy calls their hooks.

Discovery is through the ``ciml.plugins`` entry-point group only; ciml's own
built-ins are listed there in its setup.cfg exactly as a third-party package
lists its plugins.  Loading a plugin imports its module (cheap by contract:
no TensorFlow at import time), registers it with pluggy, and calls the
registration hooks to fill a registry of components by kind and name.  ciml,
not pluggy, picks which component runs, by the name the user typed.
"""

import dataclasses
import importlib.metadata
import logging
import threading

import pluggy
import stevedore

from ciml import hookspecs
from ciml.base import KINDS
from ciml.errors import PluginConflictError, UnknownPluginError

LOG = logging.getLogger(__name__)

NAMESPACE = "ciml.plugins"


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
    def description(self):
        return self.cls.description()


@dataclasses.dataclass
class LoadFailure:
    """A plugin module that could not be loaded, and why."""

    plugin: str
    target: str
    distribution: str | None
    error: str


def _entry_point_distributions():
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


class PluginManager:
    """Loads plugins and keeps the registry of components by kind and name."""

    def __init__(self, load_entry_points=True):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registry = {kind: {} for kind in KINDS}
        self.failures = []
        self.conflicts = {}  # (kind, name) -> message
        self.plugins = {}  # plugin name -> (distribution, version)
        if load_entry_points:
            self.load_entry_points()

    @property
    def hook(self):
        """pluggy's hook relay, for calling lifecycle hooks."""
        return self.pm.hook

    def load_entry_points(self):
        dists = _entry_point_distributions()

        def on_failure(manager, entry_point, exc):
            dist = dists.get((entry_point.name, entry_point.value), (None, None))[0]
            failure = LoadFailure(entry_point.name, entry_point.value, dist,
                                  f"{type(exc).__name__}: {exc}")
            self.failures.append(failure)
            LOG.warning("could not load ciml plugin %r (%s) from %s: %s",
                        failure.plugin, failure.target,
                        failure.distribution or "an unknown distribution",
                        failure.error)

        mgr = stevedore.ExtensionManager(
            NAMESPACE, invoke_on_load=False,
            on_load_failure_callback=on_failure)
        # Sorted so that registration, and so conflict messages, are stable.
        for ext in sorted(mgr.extensions, key=lambda e: e.name):
            dist, version = dists.get((ext.name, ext.entry_point.value), (None, None))
            try:
                self.add_plugin(ext.plugin, ext.name, distribution=dist, version=version)
            except Exception as exc:
                # A registration hook that raises (a class of the wrong kind)
                # is reported like an import failure: the rest keeps working.
                self.unregister(ext.name)
                on_failure(mgr, ext.entry_point, exc)

    def add_plugin(self, plugin, name, distribution=None, version=None):
        """Register one plugin (module or object) and collect its components.

        Used for entry points, and by tests to register a throwaway plugin.
        """
        try:
            self.pm.register(plugin, name=name)
            # A hook spelled wrongly would otherwise never be called, silently.
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            failure = LoadFailure(name, getattr(plugin, "__name__", repr(plugin)),
                                  distribution, str(exc))
            self.failures.append(failure)
            LOG.warning("ciml plugin %r from %s is invalid: %s", name,
                        distribution or "an unknown distribution", exc)
            return
        self.plugins[name] = (distribution, version)
        for kind, (base, hook_name) in KINDS.items():
            hook_caller = getattr(self.pm.hook, hook_name)
            for impl in hook_caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                register = self._registrar(kind, base, plugin, name, distribution, version)
                impl.function(register=register)

    def _registrar(self, kind, base, plugin, plugin_name, distribution, version):
        def register(cls, name=None):
            name = name or getattr(cls, "name", None)
            if not isinstance(cls, type) or not issubclass(cls, base):
                raise TypeError(
                    f"plugin {plugin_name!r} registered {cls!r} as a "
                    f"{kind.replace('_', ' ')}, but it does not derive from "
                    f"{base.__module__}.{base.__name__}")
            if not name:
                raise TypeError(f"plugin {plugin_name!r} registered {cls!r} without a name")
            existing = self.registry[kind].get(name)
            if existing is not None and existing.cls is not cls:
                # Not fatal at load: the rest of ciml keeps working, and only
                # using the ambiguous name fails, saying which two to choose from.
                message = (
                    f"two {kind.replace('_', ' ')}s are named {name!r}: "
                    f"{existing.cls.__module__}.{existing.cls.__name__} from "
                    f"{existing.distribution or 'an unknown distribution'} and "
                    f"{cls.__module__}.{cls.__name__} from "
                    f"{distribution or 'an unknown distribution'}; uninstall one")
                self.conflicts[(kind, name)] = message
                LOG.warning("%s", message)
                return cls
            if cls.name != name:
                # The registered name is the one saved in experiments and models.
                cls = type(cls.__name__, (cls,), {"name": name, "__doc__": cls.__doc__,
                                                  "__module__": cls.__module__})
            self.registry[kind][name] = PluginInfo(
                kind=kind, name=name, cls=cls, module=cls.__module__,
                plugin=plugin_name, distribution=distribution, version=version)
            return cls
        return register

    def unregister(self, name):
        """Remove a plugin and its components (tests use this)."""
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        for kind in self.registry:
            self.registry[kind] = {n: i for n, i in self.registry[kind].items()
                                   if i.plugin != name}
        self.plugins.pop(name, None)

    def info(self, kind, name):
        """The :class:`PluginInfo` of one component, or a helpful error."""
        if kind not in self.registry:
            raise UnknownPluginError("plugin kind", kind, self.registry)
        if (kind, name) in self.conflicts:
            raise PluginConflictError(self.conflicts[(kind, name)])
        try:
            return self.registry[kind][name]
        except KeyError:
            raise UnknownPluginError(kind, name, self.registry[kind]) from None

    def get(self, kind, name):
        """The class registered for a kind and name."""
        return self.info(kind, name).cls

    def names(self, kind):
        return sorted(self.registry[kind])

    def all(self, kind=None):
        kinds = [kind] if kind else list(self.registry)
        for k in kinds:
            if k not in self.registry:
                raise UnknownPluginError("plugin kind", k, self.registry)
            for name in sorted(self.registry[k]):
                yield self.registry[k][name]

    def call_lifecycle(self, hook_name, **kwargs):
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


_manager = None
_lock = threading.Lock()


def get_manager():
    """The process-wide plugin manager, loaded on first use."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = PluginManager()
        return _manager


def reset_manager(manager=None):
    """Replace the process-wide manager (tests; ``None`` reloads lazily)."""
    global _manager
    with _lock:
        _manager = manager
