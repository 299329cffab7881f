"""Findings: surprises in a framework (a divergence from its documentation, from the other frameworks, or from itself
across code paths or releases), each declared ONCE as data in bnsuite/findings.toml (shipped as package data); this
module defines a finding's fields (`Finding`), loads and validates the file (`FINDINGS`, `load`, `validate`) and
derives the rest from it (`demonstrated_by`, `failure_note`, `records`, `readme_section`; `--readme` rewrites the
README's section). A malformed file fails at import with one line naming the finding and the field.

The README's findings section, the report's findings list and the failure messages of the checks that demonstrate a
finding all come from these declarations. Each finding has a standalone reproduction ``findings/<name>.py`` at the
root of the checkout: it imports only its framework and NumPy, builds the layer AND its input (seeded), prints the
observed and the expected value (with the words "observed" and "expected"), and exits 1 while the behaviour is
present, 0 once it is gone, 2 on any other error.

Standard library only (tomllib): the report and the README generator import this module without any framework.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tomllib

SEVERITIES = ("high", "medium", "low")  # high: silently wrong numbers or training; medium: a trap with a loud symptom
# or a documented-but-surprising default; low: a cosmetic or well-documented divergence.


@dataclasses.dataclass(frozen=True)
class Finding:
    name: str  # snake_case; the reproduction is findings/<name>.py
    title: str  # one sentence a user understands without the suite
    area: str  # the semantic area: "porting", "freeze", "batch-size", "precision", "replicas", "inputs", "norms", ...
    adapters: tuple[str, ...]  # adapter ids affected
    versions: str  # the framework versions it was observed on, e.g. "keras 3.15.1"
    severity: str  # one of SEVERITIES
    source: str  # the framework source (file and function or line) or documentation that explains it
    # "owner/repo#N" (with its state, e.g. "closed, guide edit only") or None: not reported (written "" in
    # findings.toml, which has no null)
    upstream: str | None
    properties: tuple[str, ...]  # property names whose checks demonstrate it (written whole, greppable)
    # The adapter whose process environment (KERAS_BACKEND, TF_USE_LEGACY_KERAS) the reproduction runs in; "" means
    # the first of `adapters`.
    reproduce_with: str = ""
    # Test-id fragments that narrow which checks of `properties` demonstrate it (e.g. a freeze idiom); empty: every
    # check of those properties on those adapters.
    where: tuple[str, ...] = ()

    @property
    def reproduction(self) -> str:
        """The reproduction's path, relative to the root of the checkout."""
        return f"findings/{self.name}.py"

    @property
    def upstream_report(self) -> str:
        """Where the text of an upstream report lives for a finding not reported upstream yet."""
        return f"findings/{self.name}.upstream.md"


DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "findings.toml")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LISTS = ("adapters", "properties", "where")  # TOML arrays of strings, held as tuples


class FindingsError(ValueError):
    """A declaration file that does not load; the message is one line naming the file, the finding and the field."""


def load(path: str = DATA) -> list[Finding]:
    """The findings declared in `path` (bnsuite/findings.toml), in the file's order."""
    shown = os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise FindingsError(f"{shown}: {e}") from None
    if set(data) - {"finding"}:
        raise FindingsError(f"{shown}: unknown top-level keys {sorted(set(data) - {'finding'})}; each finding is a "
                            "[[finding]] table")
    fields = [f.name for f in dataclasses.fields(Finding)]
    required = [f.name for f in dataclasses.fields(Finding) if f.default is dataclasses.MISSING]
    entries = data.get("finding", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FindingsError(f"{shown}: 'finding' must be an array of tables: write each one as [[finding]]")
    out = []
    for i, entry in enumerate(entries, 1):
        label = f"finding {entry['name']}" if isinstance(entry.get("name"), str) else f"finding #{i} (no name)"
        for key in entry:
            if key not in fields:
                raise FindingsError(f"{shown}: {label}: unknown field {key!r} (fields: {', '.join(fields)})")
        for key in required:
            if key not in entry:
                raise FindingsError(f"{shown}: {label}: missing field {key!r}")
        for key, value in entry.items():
            ok = (isinstance(value, list) and all(isinstance(v, str) for v in value)) if key in _LISTS \
                else isinstance(value, str)
            if not ok:
                raise FindingsError(f"{shown}: {label}: field {key!r} must be "
                                    f"{'a list of strings' if key in _LISTS else 'a string'}, not {value!r}")
        values = {k: tuple(v) if k in _LISTS else v for k, v in entry.items()}
        out.append(Finding(**{**values, "upstream": values["upstream"] or None}))  # "": not reported upstream
    return out


try:
    FINDINGS: list[Finding] = load()
except FindingsError as _e:  # one line, not a traceback (the pytest plugin turns it into a usage error)
    if __name__ == "__main__":
        print(f"findings: {_e}", file=sys.stderr)
        sys.exit(2)
    raise


# ---- machinery (standard library only) ------------------------------------------------------------------------------

README_BEGIN = "<!-- findings:begin (generated by python3 -m bnsuite.findings --readme; do not edit) -->"
README_END = "<!-- findings:end -->"


def demonstrated_by(prop: str, adapter: str, test: str = "") -> list[Finding]:
    """The findings a check of `prop` on `adapter` (in test `test`) demonstrates."""
    return [f for f in FINDINGS if prop in f.properties and adapter in f.adapters
            and (not f.where or any(w in test for w in f.where))]


def failure_note(prop: str, adapter: str, test: str = "") -> str:
    """What a failing check adds to its message when it demonstrates findings: the framework may have changed."""
    hits = demonstrated_by(prop, adapter, test)
    if not hits:
        return ""
    names = ", ".join(f.name for f in hits)
    return (f" [demonstrates finding {names}: if the framework fixed it, run {hits[0].reproduction} and update the "
            "finding and its declaration]")


def records() -> list[dict]:
    """The findings as results-file records (kind "finding"), so that reports read them from results files."""
    return [{**dataclasses.asdict(f), "reproduction": f.reproduction,
             "upstream_report": None if f.upstream else f.upstream_report} for f in FINDINGS]


def validate() -> list[str]:
    """One line per malformed finding (the meta tests require none)."""
    problems, seen = [], set()
    for f in FINDINGS:
        if f.name in seen:
            problems.append(f"{f.name}: declared twice")
        seen.add(f.name)
        if not f.name.isidentifier() or f.name != f.name.lower():
            problems.append(f"{f.name}: name must be snake_case")
        if f.severity not in SEVERITIES:
            problems.append(f"{f.name}: severity {f.severity!r} not in {SEVERITIES}")
        for field in ("title", "area", "versions", "source"):
            if not getattr(f, field):
                problems.append(f"{f.name}: empty {field}")
        if not f.adapters or not f.properties:
            problems.append(f"{f.name}: needs adapters and properties")
        if f.reproduce_with and f.reproduce_with not in f.adapters:
            problems.append(f"{f.name}: reproduce_with {f.reproduce_with!r} is not one of its adapters")
    return problems


def readme_section() -> str:
    """The README's findings section, between its two markers."""
    lines = [README_BEGIN, "",
             f"{len(FINDINGS)} findings, {sum(f.upstream is not None for f in FINDINGS)} with an upstream issue. Each "
             "is declared once in `bnsuite/findings.toml`, demonstrated by checks that fail naming it if the framework "
             "changes, and reproduced standalone by `findings/<name>.py` (exit 1 while the behaviour is present, 0 "
             "once it is gone; the test command runs them all; alone: `.venv/bin/python -m pytest meta_tests -m reproductions`). "
             "Findings not yet reported upstream have the text of a report in `findings/<name>.upstream.md`.", ""]
    order = {s: i for i, s in enumerate(SEVERITIES)}
    for f in sorted(FINDINGS, key=lambda f: order.get(f.severity, 9)):
        upstream = f.upstream or f"not reported upstream (draft: `{f.upstream_report}`)"
        lines += [f"- **{f.title}** ({f.severity}; {', '.join(f'`{a}`' for a in f.adapters)}; {f.versions})",
                  f"  Source: {f.source}. Upstream: {upstream}. Reproduce: `python {f.reproduction}`."]
    lines += ["", README_END]
    return "\n".join(lines)


def rewrite_readme(text: str) -> str:
    """README text with the findings section replaced; ValueError when the markers are missing."""
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError("README.md has no findings markers")
    return text[:start] + readme_section() + text[end + len(README_END):]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bnsuite.findings", description="The declared findings.")
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's findings section")
    ap.add_argument("--check", action="store_true", help="with --readme: exit 1 if README.md is out of date")
    args = ap.parse_args(argv)
    problems = validate()
    for p in problems:
        print(f"findings: {p}", file=sys.stderr)
    if problems:
        return 2
    if not args.readme:
        for f in FINDINGS:
            print(f"{f.severity:6s} {f.name:50s} {f.upstream or 'not reported upstream'}")
        return 0
    path = os.path.join(ROOT, "README.md")
    try:
        with open(path, encoding="utf-8") as fh:
            old = fh.read()
        new = rewrite_readme(old)
    except (OSError, ValueError) as e:
        print(f"findings: {path}: {e}", file=sys.stderr)
        return 2
    if args.check:
        if new != old:
            print("findings: README.md's findings section is out of date; run python3 -m bnsuite.findings --readme",
                  file=sys.stderr)
            return 1
        return 0
    if new != old:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(new)
    print(f"README.md: {len(FINDINGS)} findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
