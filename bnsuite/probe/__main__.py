"""python -m bnsuite.probe MODULE:FACTORY [--input x.npy] [--framework torch|keras|flax] [--batch-sizes 1,2,8] [--tol 1e-4]

FACTORY (a callable in MODULE, or in FILE.py) returns (model, x) or a model; --input supplies x (and overrides the
factory's).
Bad input prints one line to stderr and exits 2.
"""

from __future__ import annotations

import sys

from bnsuite.audit.loading import LoadError, load_model_and_input
from bnsuite.audit.one_line import ToolParser, error
from bnsuite.probe.core import FRAMEWORKS, ProbeError, find_batch_dependence


def main(argv=None) -> int:
    p = ToolParser("probe", description="Find the first layer whose inference output depends on the batch size.")
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
        model, x = load_model_and_input(args.model, args.input)
        if x is None:
            raise ProbeError(f"no input: pass --input FILE.npy ({args.model}() returned a model only)")
        report = find_batch_dependence(model, x, framework=args.framework, batch_sizes=sizes, tol=args.tol)
    except (LoadError, ProbeError) as e:
        return error("probe", e)
    print(report)
    return 0 if report.invariant else 1


if __name__ == "__main__":
    sys.exit(main())
