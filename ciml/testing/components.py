"""Checks every conformance kit shares: how a plugin class declares itself."""

from typing import Any

from ciml.base.component import Component


def check_component_declaration(cls: Any, base: type[Component]) -> list[str]:
    """``cls`` derives from ``base``, has a name and a docstring, and declares
    each of its parameters once, under a Python identifier."""
    assert isinstance(cls, type) and issubclass(cls, base), \
        f"{cls!r} does not derive from ciml.base.{base.__name__}"
    assert cls.name, f"{cls.__name__} has no name"
    assert cls.description(), f"{cls.__name__} has no docstring (ciml plugin list shows it)"
    names = [p.name for p in cls.parameters]
    assert len(names) == len(set(names)), f"{cls.__name__} declares a parameter twice"
    for p in cls.parameters:
        assert p.name.isidentifier(), f"parameter name {p.name!r} is not an identifier"
    return names
