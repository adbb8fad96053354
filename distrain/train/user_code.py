"""Calling the user's ``package.module:factory`` (a model or a dataset) with one-line errors."""
from __future__ import annotations

import importlib

from distrain.errors import UsageError

__all__ = ["call_factory"]


def call_factory(spec: str, kind: str, **kwargs):
    """Imports the factory ``spec`` names and calls it with ``kwargs``.

    Args:
        spec: ``package.module:factory``.
        kind: ``model`` or ``dataset``, for messages.
        **kwargs: the factory's arguments.

    Returns:
        What the factory returned.

    Raises:
        UsageError: the module or the factory is missing, or the factory raised.
    """
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise UsageError(f"cannot import {kind} module {module_name!r} ({exc}); check the "
                         f"name and that it is on PYTHONPATH") from None
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no {kind} factory {attr!r}") from None
    try:
        return factory(**kwargs)
    except Exception as exc:  # the user's code: report it, do not crash
        raise UsageError(f"{kind} factory {spec} raised {type(exc).__name__}: {exc}") from None
