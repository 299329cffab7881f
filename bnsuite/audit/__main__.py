"""python -m bnsuite.audit MODULE:FACTORY [--input x.npy] [--json]

FACTORY (a callable in MODULE, or in FILE.py) returns a model or (model, x). Prints every BatchNorm in canonical terms
and the warnings. Exit 0 without warnings, 1 with warnings, 2 with one line on bad input.
"""

from __future__ import annotations

import sys

from bnsuite.audit.core import AuditError, audit
from bnsuite.audit.loading import LoadError, load_model_and_input
from bnsuite.audit.one_line import ToolParser, print_report


def main(argv=None, prog: str | None = None) -> int:
    """The command; `prog` names it in usage (python3 -m bnsuite audit runs this with its own name)."""
    p = ToolParser("audit", prog=prog, description="Every BatchNorm of a model in canonical terms, with warnings.")
    p.add_argument("model", metavar="MODULE:FACTORY")
    p.add_argument("--input", metavar="FILE.npy", help="an input batch (needed for Flax; gives torch's call order)")
    p.add_argument("--json", action="store_true", help="JSON for tools instead of text")
    args = p.parse_args(argv)
    return print_report("audit", lambda: audit(*load_model_and_input(args.model, args.input)),
                        (LoadError, AuditError), args.json, verdict=lambda report: 1 if report.warnings else 0)


if __name__ == "__main__":
    sys.exit(main())
