"""A cheaper ``__init__`` for the rules' frozen, slotted result dataclasses.

``dataclass(frozen=True)`` generates an ``__init__`` that stores each field with
``object.__setattr__(self, name, value)``: a generic attribute look-up per field. The rules
build thousands of findings per second, each with its :class:`~plugin.rules.findings.Finding`
and an 18-field :class:`~plugin.rules.findings.FindingFacts`, so that cost shows. The
:func:`fast_init` decorator replaces the generated ``__init__`` by one with the same parameters,
defaults and default factories that stores each field through its slot's descriptor instead,
about half the cost. Everything else the dataclass generated (frozen ``__setattr__``,
``__eq__``, ``__hash__``, ``__repr__``, ``__match_args__``) is left as it is.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Give a frozen, slotted dataclass an equivalent ``__init__`` that writes the slots
    directly (apply it above ``@dataclass``). Only plain fields are supported."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
    namespace: dict[str, Any] = {"MISSING": dataclasses.MISSING}
    params_src: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name}: only plain init fields are supported")
        name = f.name
        namespace[f"set_{name}"] = cls.__dict__[name].__set__  # the slot's member descriptor
        if f.default is not dataclasses.MISSING:
            namespace[f"default_{name}"] = f.default
            params_src.append(f"{name}=default_{name}")
            body.append(f"    set_{name}(self, {name})")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"factory_{name}"] = f.default_factory
            params_src.append(f"{name}=MISSING")
            body.append(f"    set_{name}(self, factory_{name}() if {name} is MISSING else {name})")
        else:
            params_src.append(name)
            body.append(f"    set_{name}(self, {name})")
    source = f"def __init__(self, {', '.join(params_src)}):\n" + "\n".join(body) + "\n"
    exec(source, namespace)  # noqa: S102 - built from the class's own field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
