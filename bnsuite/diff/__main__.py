"""python -m bnsuite.diff SOURCE TARGET [--input x.npy] [--json]

SOURCE and TARGET name factories (MODULE:FACTORY or FILE.py:FACTORY) returning a model or (model, x); the input (in
the source's layout) comes from --input or the source's factory. Exit 0 when the models match, 1 when they differ, 2
with one line on bad input.
"""

from __future__ import annotations

import sys

from bnsuite.audit.loading import LoadError, load_model, load_model_and_input
from bnsuite.audit.one_line import ToolParser, print_report
from bnsuite.diff.core import DiffError, diff


def main(argv=None, prog: str | None = None) -> int:
    """The command; `prog` names it in usage (python3 -m bnsuite diff runs this with its own name)."""
    p = ToolParser("diff", prog=prog, description="Compare the BatchNorm layers and outputs of two models.")
    p.add_argument("source", metavar="SOURCE_MODULE:FACTORY")
    p.add_argument("target", metavar="TARGET_MODULE:FACTORY")
    p.add_argument("--input", metavar="FILE.npy", help="an input batch in the source's layout")
    p.add_argument("--json", action="store_true", help="JSON for tools instead of text")
    args = p.parse_args(argv)

    def compare():
        source, x = load_model_and_input(args.source, args.input)
        target, _ = load_model(args.target)
        return diff(source, target, x)

    return print_report("diff", compare, (LoadError, DiffError), args.json,
                        verdict=lambda report: 0 if report.matches else 1)


if __name__ == "__main__":
    sys.exit(main())
