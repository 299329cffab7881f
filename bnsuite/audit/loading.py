"""Loading a model for the audit, diff and probe commands: MODULE:FACTORY (a callable returning a model or
(model, x)) or MODULE.py:FACTORY, and an optional input array. Every failure is one line (LoadError)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import numpy as np


class LoadError(Exception):
    """str() is one line for the user."""


def _line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else ""


def load_factory(ref: str):
    """The callable named by 'module:factory' or 'path/to/file.py:factory'."""
    module_name, sep, attr = ref.rpartition(":")
    if not sep or not module_name or not attr:
        raise LoadError(f"model reference {ref!r} must look like 'module:factory' or 'file.py:factory'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if module_name.endswith(".py"):
            if not os.path.isfile(module_name):
                raise LoadError(f"no such file: {module_name}")
            spec = importlib.util.spec_from_file_location(os.path.basename(module_name)[:-3], module_name)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except LoadError:
        raise
    except BaseException as e:  # a SyntaxError or SystemExit in the user's file too
        raise LoadError(f"cannot import module {module_name!r}: {type(e).__name__}: {_line(e)}") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise LoadError(f"module {module_name!r} has no callable {attr!r}")
    return factory


def load_model(ref: str):
    """(model, x or None) from the factory named by `ref`."""
    factory = load_factory(ref)
    try:
        result = factory()
    except BaseException as e:
        raise LoadError(f"{ref}() raised {type(e).__name__}: {_line(e)}") from None
    if isinstance(result, tuple) and len(result) == 2 and hasattr(result[1], "shape") \
            and not isinstance(result[1], dict):
        return result[0], np.asarray(result[1])
    return result, None


def load_input(path: str | None):
    if path is None:
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise LoadError(f"cannot read --input {path!r}: {_line(e)}") from None


def load_model_and_input(ref: str, path: str | None):
    """(model, x): the model named by `ref`, and the batch in `path` where given, else the one its factory returned
    (or None)."""
    model, x = load_model(ref)
    x_file = load_input(path)
    return model, x_file if x_file is not None else x
