"""python -m bnsuite.probe MODULE:FACTORY [--input x.npy] [--framework torch|keras|flax] [--batch-sizes 1,2,8] [--tol 1e-4]

FACTORY (a callable in MODULE) returns (model, x) or a model; --input supplies x (and overrides the factory's).
Bad input prints one line to stderr and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import numpy as np

from bnsuite.probe.core import FRAMEWORKS, ProbeError, find_batch_dependence


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage too)
        sys.stderr.write(f"probe: error: {message}\n")
        sys.exit(2)


def _load_factory(ref: str):
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ProbeError(f"model reference {ref!r} must look like 'module:factory'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ProbeError(f"cannot import module {module_name!r}: {type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ProbeError(f"module {module_name!r} has no callable {attr!r}")
    return factory


def _split(result):
    """(model, x) when the factory returned a model and an array, else (result, None)."""
    if isinstance(result, tuple) and len(result) == 2 and hasattr(result[1], "shape") \
            and not isinstance(result[1], dict):
        return result[0], result[1]
    return result, None


def main(argv=None) -> int:
    p = _Parser(prog="python -m bnsuite.probe", description="Find the first layer whose inference output depends on the "
                                                    "batch size.")
    p.add_argument("model", metavar="MODULE:FACTORY")
    p.add_argument("--input", metavar="FILE.npy", help="input batch (NumPy .npy); required unless FACTORY returns it")
    p.add_argument("--framework", help=f"override detection: {', '.join(FRAMEWORKS)}")
    p.add_argument("--batch-sizes", default="1,2,8", help="comma-separated batch sizes (the full batch is added)")
    p.add_argument("--tol", type=float, default=None, help="relative tolerance per layer (default 1e-4)")
    args = p.parse_args(argv)
    try:
        if args.framework is not None and args.framework not in FRAMEWORKS:
            raise ProbeError(f"unknown framework {args.framework!r}: use one of {', '.join(FRAMEWORKS)}")
        try:
            sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()] + [None]
        except ValueError:
            raise ProbeError(f"--batch-sizes {args.batch_sizes!r} is not a comma-separated list of integers") from None
        x = None
        if args.input is not None:
            try:
                x = np.load(args.input, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ProbeError(f"cannot read --input {args.input!r}: {str(e).strip().splitlines()[0]}") from None
        factory = _load_factory(args.model)
        try:
            model, x_factory = _split(factory())
        except Exception as e:
            raise ProbeError(f"{args.model}() raised {type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
        x = x if x is not None else x_factory
        if x is None:
            raise ProbeError(f"no input: pass --input FILE.npy ({args.model}() returned a model only)")
        report = find_batch_dependence(model, x, framework=args.framework, batch_sizes=sizes, tol=args.tol)
    except ProbeError as e:
        sys.stderr.write(f"probe: error: {e}\n")
        return 2
    print(report)
    return 0 if report.invariant else 1


if __name__ == "__main__":
    sys.exit(main())
