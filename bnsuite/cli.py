"""The command line: `python3 -m bnsuite` (or `bnsuite` when installed).

    python3 -m bnsuite matrix     # the main job: every group (nine adapter groups + meta tests), then the HTML report,
                                  # with screenshots of its front page and its matrix beside it
    python3 -m bnsuite test       # the project's tests: the same groups without the report; both exit non-zero on
                                  # any failure, and fail if a group collected nothing
    python3 -m bnsuite groups     # list the groups
    python3 -m bnsuite drift      # the same suites over a window of framework releases (bnsuite/drift.py)
    python3 -m bnsuite lock       # regenerate requirements/lock.txt (uv)
    python3 -m bnsuite audit MODEL          # every BatchNorm of your model in canonical terms, with warnings
    python3 -m bnsuite diff SOURCE TARGET   # two models' BatchNorm layers and outputs compared, what to change

`audit` and `diff` take the options of `python -m bnsuite.audit` / `python -m bnsuite.diff` (docs/audit-and-diff.md)
and print the same error lines; they run in the current interpreter, or, where it lacks NumPy, in the checkout's
environment.

Options may stand before or after the command (`--jobs 1 test` = `test --jobs 1`); everything after `--` goes to
pytest as it is (e.g. `-- -k momentum --bn-case-timeout 60`). Bad input is one line on stderr and exit 2.

From a checkout it creates (or reuses) the virtual environment named by BNSUITE_VENV (default ./.venv) from the lock
file requirements/lock.txt (with uv where it is found, else pip; BNSUITE_INSTALLER=pip|uv chooses), then runs
everything inside it. Installed with pip (no checkout), it runs the adapter groups with the current interpreter,
results and report in the current directory. `--python PATH` runs the groups with that interpreter instead.
Standard library only.
"""

from __future__ import annotations

import argparse
import os
import sys

from bnsuite import __version__, envs, groups
from bnsuite.console import fail, say

COMMANDS = {
    "matrix": "every group, then the HTML report",
    "test": "every group, no report",
    "groups": "list the groups",
    "drift": "the suites over a window of framework releases, then the drift view",
    "lock": "regenerate requirements/lock.txt with uv",
    "audit": "every BatchNorm of a model in canonical terms, with warnings (audit --help)",
    "diff": "two models' BatchNorm layers and outputs compared (diff --help)",
}
TOOLS = ("audit", "diff")  # model tools: their own parsers (bnsuite/audit/__main__.py, bnsuite/diff/__main__.py)
RUNS = ("matrix", "test", "drift")  # the commands that take the run options


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors as one line (`bnsuite: error: ...`, exit 2) instead of usage plus error."""

    def error(self, message: str):
        fail(f"{message} (see python3 -m bnsuite --help)")


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return n


def add_run_options(p: argparse.ArgumentParser, after: bool) -> None:
    """The run options, on the main parser (before the command) and on each run command (after it). Those after the
    command land in <dest>_after and are merged by merge_options, so neither place overrides the other silently."""
    sfx = "_after" if after else ""
    quiet = {"default": argparse.SUPPRESS} if after else {}
    p.add_argument("--only", action="append", dest="only" + sfx, metavar="NAME", default=[] if not after else None,
                   help="run only these groups (matrix, test) or release sets (drift); repeatable")
    p.add_argument("--adapter", action="append", dest="adapter" + sfx, metavar="REF", default=[] if not after else None,
                   help="matrix, test: run your own adapter ('package.module:Class', importable from the current "
                        "directory) as a group of its own instead of the built-in groups; repeatable")
    p.add_argument("--jobs", type=positive_int, dest="jobs" + sfx, metavar="N", **quiet,
                   **({} if after else {"default": 2}), help="groups run at once (default 2)")
    p.add_argument("--python", dest="python" + sfx, metavar="PATH", **quiet,
                   **({} if after else {"default": os.environ.get("BNSUITE_PYTHON")}),
                   help="run the groups with this interpreter instead of creating the environment (env "
                        "BNSUITE_PYTHON; the default when bnsuite is installed rather than run from a checkout)")
    p.add_argument("--run-dir", dest="run_dir" + sfx, metavar="DIR", **quiet,
                   help="results folder (default results/<time>, drift: results/drift-<time>)")
    p.add_argument("--report", dest="report" + sfx, metavar="PATH", **quiet,
                   help="report path (default report/index.html, drift: report/drift.html)")


def parser() -> OneLineParser:
    ap = OneLineParser(prog="python3 -m bnsuite", description=__doc__.split("\n\n")[0],
                       epilog="Everything after -- goes to pytest as it is.")
    ap.add_argument("--version", action="version", version=f"bnsuite {__version__}")
    add_run_options(ap, after=False)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser)
    for name, text in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        if name in RUNS:
            add_run_options(p, after=True)
    return ap


def merge_options(a: argparse.Namespace) -> argparse.Namespace:
    """Options after the command join those before it: --only lists add up (each name once); a value given after
    the command wins, as a repeated option does."""
    a.only = list(dict.fromkeys([*a.only, *(getattr(a, "only_after", None) or [])]))
    a.adapter = list(dict.fromkeys([*a.adapter, *(getattr(a, "adapter_after", None) or [])]))
    for key in ("jobs", "python", "run_dir", "report"):
        if hasattr(a, key + "_after"):
            setattr(a, key, getattr(a, key + "_after"))
    return a


def parse(argv: list[str]) -> argparse.Namespace:
    cut = argv.index("--") if "--" in argv else len(argv)
    a = merge_options(parser().parse_args(argv[:cut]))
    a.pytest_args = argv[cut + 1:]
    if a.command in TOOLS:
        fail(f"`{a.command}` takes its own options only, after it: python3 -m bnsuite {a.command} --help")
    if a.command not in RUNS:
        given = [opt for opt, val in (("--only", a.only), ("--adapter", a.adapter), ("--run-dir", a.run_dir),
                                      ("--report", a.report)) if val]
        if given or a.pytest_args:
            fail(f"`{a.command}` takes no {given[0] if given else 'pytest arguments'}")
    if a.adapter and (a.command == "drift" or a.only):
        fail("--adapter runs your adapter as its own group: it goes with matrix or test, without --only")
    return a


def run_tool(tool: str, argv: list[str]) -> int:
    """`python3 -m bnsuite audit|diff ARGS`: the tool's own command line under this name. Its imports need NumPy;
    where this interpreter lacks it, the command reruns in the checkout's environment."""
    import importlib

    try:
        tool_main = importlib.import_module(f"bnsuite.{tool}.__main__").main
    except ImportError as e:
        if not envs.CHECKOUT or os.environ.get("BNSUITE_TOOL_REEXEC"):
            fail(f"{tool} needs NumPy and the model's framework in this interpreter: {e}")
        py = envs.ensure_venv()
        os.environ["BNSUITE_TOOL_REEXEC"] = "1"
        os.execv(py, [py, "-m", "bnsuite", tool, *argv])
    return tool_main(argv, prog=f"python3 -m bnsuite {tool}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        return run_tool(argv[0], argv[1:])
    a = parse(argv)
    if a.python and not (os.path.isfile(a.python) and os.access(a.python, os.X_OK)):
        fail(f"--python {a.python!r}: not an executable file")
    groups.read_with(a.python)
    if a.command == "groups":
        for line in groups.listing():
            say(line)
        return 0
    if a.command == "lock":
        return envs.lock()
    if a.command == "drift":
        from bnsuite import drift

        return drift.run(a.only, a.jobs, a.python, a.run_dir, a.report, a.pytest_args)
    from bnsuite import runner

    chosen = groups.own(a.adapter) if a.adapter else groups.select(groups.for_command(a.command), a.only)
    report = a.report or os.path.join(envs.BASE, "report", "index.html")
    return runner.run(a.command, chosen, a.jobs, a.python, a.run_dir, report, a.pytest_args)


def entry() -> int:
    """The console entry point: main() with Ctrl-C turned into one line."""
    try:
        return main()
    except KeyboardInterrupt:
        fail("interrupted; results measured so far are in results/", 130)
    except BrokenPipeError:  # `python3 -m bnsuite groups | head`: the reader left; nothing more to say
        sys.stderr.close()
    return 1
