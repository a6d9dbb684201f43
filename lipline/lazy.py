"""Module attributes built on first use (PEP 562): a Prefect task wrapping a plain function, without importing
Prefect where only the function is called (the validation worker, the CLI's `validate`)."""

from __future__ import annotations

import contextlib
import importlib
import threading
from typing import Callable, Iterable


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


def import_in_background(modules: Iterable[str], name: str = "lipline-warm-imports") -> threading.Thread:
    """Import `modules` in a daemon thread, for a caller about to block on other work (a worker process, I/O):
    later stages then find them loaded instead of importing on the job's critical path. Only a warm-up: a module
    that fails here is imported (and fails, with its own error) where it is used."""

    def work() -> None:
        for module in modules:
            with contextlib.suppress(Exception):
                importlib.import_module(module)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    return thread


__all__ = ["import_in_background", "lazy_attributes"]
