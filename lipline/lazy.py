"""Module attributes built on first use (PEP 562): a Prefect task wrapping a plain function, without importing
Prefect where only the function is called (the validation worker, the CLI's `validate`)."""

from __future__ import annotations

from typing import Callable


def lazy_attributes(namespace: dict, **factories: Callable[[], object]) -> Callable[[str], object]:
    """A module ``__getattr__`` that makes ``name`` with ``factories[name]()`` the first time it is asked for and
    keeps it in the module (`namespace`, the module's ``globals()``): later lookups never come back here."""

    def __getattr__(name: str) -> object:
        factory = factories.get(name)
        if factory is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = namespace[name] = factory()
        return value

    return __getattr__


__all__ = ["lazy_attributes"]
