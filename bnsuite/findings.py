"""Findings: surprises in a framework (a divergence from its documentation, from the other frameworks, or from itself
across code paths or releases), each declared ONCE as data in bnsuite/findings.toml (shipped as package data); this
module defines a finding's fields (`Finding`), loads and validates the file (`FINDINGS`, `load`, `validate`) and
derives the rest from it (`demonstrated_by`, `failure_note`, `records`, `readme_section`, `findings_page`,
`fix_installed`; `--readme` rewrites the README's compact table and the full list docs/findings-list.md). A malformed
file fails at import with one line naming the finding and the field.

A finding has a kind (a bug, a documented divergence or a convention), a severity by the rubric of docs/findings.md,
and an upstream status with the search behind it. The README's findings table, the report's findings table and the
failure messages of the checks that demonstrate a finding all come from these declarations. Each finding has a
standalone reproduction ``findings/<name>.py`` at the root of the checkout: it imports only its framework and NumPy,
prints the versions it runs on, builds the layer AND its input (seeded), prints the observed and the expected value
(with the words "observed" and "expected"), and exits 1 while the behaviour is present, 0 once it is gone, 2 with one
line when it could not measure (a missing framework, any error before the measurement). A bug with nothing open or
fixed upstream has a report draft ``findings/<name>.upstream.md``.

Standard library only (tomllib): the report and the README generator import this module without any framework.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tomllib

SEVERITIES = ("high", "medium", "low")  # the rubric is docs/findings.md: what makes each, applied to every finding
# bug: contradicts the framework's own documentation or stated intent, or silently loses data or accuracy;
# documented-divergence: intended and documented, yet it bites users (the finding quotes the documentation);
# convention: a documented choice that differs between frameworks (defaults), neither side wrong.
KINDS = ("bug", "documented-divergence", "convention")
# not-reported: searched, nothing upstream; reported-open / reported-closed: an upstream issue or pull request exists
# (closed without a fix in the installed release); fixed-unreleased: fixed on the default branch (fixed_by), in no
# release yet; fixed-released: fixed_in is the first release that carries fixed_by.
STATUSES = ("not-reported", "reported-open", "reported-closed", "fixed-unreleased", "fixed-released")
# Only a bug that has no open upstream report and no upstream fix gets a report draft (findings/<name>.upstream.md).
DRAFTED = ("not-reported", "reported-closed")


@dataclasses.dataclass(frozen=True)
class Finding:
    name: str  # snake_case; the reproduction is findings/<name>.py
    title: str  # one sentence a user understands without the suite
    kind: str  # one of KINDS
    area: str  # the semantic area: "porting", "freeze", "batch-size", "precision", "replicas", "inputs", "norms", ...
    adapters: tuple[str, ...]  # adapter ids affected
    versions: str  # the framework versions it was observed on, e.g. "keras 3.15.1"
    severity: str  # one of SEVERITIES, by the rubric in docs/findings.md
    source: str  # the framework source (file and function) that explains it
    status: str  # one of STATUSES
    # "owner/repo#N (state: what it says)", several separated by "; ", or None: nothing upstream (written "" in
    # findings.toml, which has no null)
    upstream: str | None
    searched: str  # the evidence for the status: which trackers, which queries
    searched_on: str  # the date of that search, YYYY-MM-DD
    properties: tuple[str, ...]  # property names whose checks demonstrate it (written whole, greppable)
    # The documentation a maintainer would quote back, quoted, with the file and object of the installed package it is
    # in: required for documented-divergence and convention; for a bug, the documentation that sets the expectation.
    documentation: str = ""
    fixed_by: str = ""  # fixed-*: the upstream commit that fixes it
    fixed_in: str = ""  # fixed-released: the first release that carries fixed_by, "<distribution> <version>"
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
    def upstream_report(self) -> str | None:
        """The report draft's path for a bug with nothing open or fixed upstream; None for every other finding."""
        return f"findings/{self.name}.upstream.md" if self.kind == "bug" and self.status in DRAFTED else None

    @property
    def status_text(self) -> str:
        """The status in words, with its evidence: what was searched, when, and what was found."""
        found = {"not-reported": "not reported upstream",
                 "reported-open": f"reported upstream, open: {self.upstream}",
                 "reported-closed": "reported upstream, closed without a fix in the installed release: "
                                    f"{self.upstream}",
                 "fixed-unreleased": f"fixed upstream by {self.fixed_by[:10]}, in no release yet: {self.upstream}",
                 "fixed-released": f"fixed upstream by {self.fixed_by[:10]}, first released in {self.fixed_in}: "
                                   f"{self.upstream}"}.get(self.status, self.status)
        if self.status == "not-reported" and self.upstream:
            found += f" (related: {self.upstream})"
        return f"{found}. Searched {self.searched_on}: {self.searched}"


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
LIST_PAGE = "docs/findings-list.md"  # the full list, generated whole beside the README's compact table


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
    """The findings as results-file records (kind "finding"; the finding's own kind is "finding_kind"), so that
    reports read them from results files."""
    out = []
    for f in FINDINGS:
        rec = dataclasses.asdict(f)
        rec["finding_kind"] = rec.pop("kind")  # "kind" names the record's own kind in a results file
        out.append({**rec, "reproduction": f.reproduction, "upstream_report": f.upstream_report,
                    "status_text": f.status_text})
    return out


def _release(text: str) -> tuple[str, tuple[int, ...]] | None:
    """("keras", (3, 16, 0)) from "keras 3.16.0"; None when it does not read as "<distribution> <version>"."""
    dist, _, version = text.strip().partition(" ")
    parts = version.split(".")
    return (dist.lower(), tuple(int(p) for p in parts)) if dist and parts and all(p.isdigit() for p in parts) else None


def fix_installed(f: Finding, installed: dict[str, str]) -> bool:
    """Whether the installed versions (distribution -> version) carry the release that fixes `f`: a release-drift run
    on such a set expects the behaviour to be gone, so the finding's declaration turns into a declared change."""
    fixed = _release(f.fixed_in) if f.status == "fixed-released" else None
    have = _release(f"{fixed[0]} {installed.get(fixed[0], '')}") if fixed else None
    return bool(fixed and have and have[1] >= fixed[1])


def validate() -> list[str]:
    """One line per malformed finding (the meta tests require none)."""
    problems, seen = [], set()
    for f in FINDINGS:
        if f.name in seen:
            problems.append(f"{f.name}: declared twice")
        seen.add(f.name)
        if not f.name.isidentifier() or f.name != f.name.lower():
            problems.append(f"{f.name}: name must be snake_case")
        for field, allowed in (("kind", KINDS), ("severity", SEVERITIES), ("status", STATUSES)):
            if getattr(f, field) not in allowed:
                problems.append(f"{f.name}: {field} {getattr(f, field)!r} not in {allowed}")
        for field in ("title", "area", "versions", "source", "searched"):
            if not getattr(f, field):
                problems.append(f"{f.name}: empty {field}")
        if not (len(f.searched_on) == 10 and f.searched_on[4] == f.searched_on[7] == "-"
                and f.searched_on.replace("-", "").isdigit()):
            problems.append(f"{f.name}: searched_on {f.searched_on!r} is not a YYYY-MM-DD date")
        if f.kind != "bug" and not f.documentation:
            problems.append(f"{f.name}: a {f.kind} quotes the documentation that states it (documentation)")
        if f.status != "not-reported" and f.upstream is None:
            problems.append(f"{f.name}: status {f.status} names no upstream issue")
        if f.status.startswith("fixed-") != bool(f.fixed_by):
            problems.append(f"{f.name}: fixed_by is the fixing commit of a fixed-* status, and only of one")
        if (f.status == "fixed-released") != bool(f.fixed_in) or (f.fixed_in and _release(f.fixed_in) is None):
            problems.append(f"{f.name}: fixed_in is the first release ('<distribution> <version>') of a fixed-released"
                            " status, and only of one")
        if not f.adapters or not f.properties:
            problems.append(f"{f.name}: needs adapters and properties")
        if f.reproduce_with and f.reproduce_with not in f.adapters:
            problems.append(f"{f.name}: reproduce_with {f.reproduce_with!r} is not one of its adapters")
    return problems


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _ranked() -> list[Finding]:
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(FINDINGS, key=lambda f: (KINDS.index(f.kind), order.get(f.severity, 9)))


def _summary(link: str) -> str:
    by_kind = {k: sum(f.kind == k for f in FINDINGS) for k in KINDS}
    return (f"{len(FINDINGS)} findings: {by_kind['bug']} bugs, {by_kind['documented-divergence']} documented "
            f"divergences, {by_kind['convention']} conventions; {sum(f.status != 'not-reported' for f in FINDINGS)} "
            "with an upstream issue or fix. Each is declared once in `bnsuite/findings.toml`, demonstrated by checks "
            "that fail naming it if the framework changes, and reproduced standalone by `findings/<name>.py` (exit 1 "
            "while the behaviour is present, 0 once it is gone, 2 when it could not measure; the test command runs "
            "them all; alone: `.venv/bin/python -m pytest meta_tests -m reproductions`). A bug with nothing open or "
            "fixed upstream has a report draft in `findings/<name>.upstream.md`. Kinds, the severity rubric and the "
            f"status rules: [docs/findings.md]({link}).")


def readme_section() -> str:
    """The README's findings section, between its two markers: a compact table, one row per finding, each linking to
    its entry in the full list (`findings_page`)."""
    lines = [README_BEGIN, "", _summary("docs/findings.md"), "",
             f"The full list (what each finding is, its source, documentation, upstream status and reproduction): "
             f"[{LIST_PAGE}]({LIST_PAGE}).", "",
             "| # | Finding | Kind | Severity | Frameworks | Upstream |", "|---|---|---|---|---|---|"]
    for i, f in enumerate(_ranked(), 1):
        families = sorted({a.split("-")[0].replace("tf_keras", "tf").replace("tf1", "tf") for a in f.adapters})
        lines.append(f"| {i} | [`{f.name}`]({LIST_PAGE}#{f.name}) | {f.kind} | {f.severity} | "
                     f"{', '.join(families)} | {f.status} |")
    lines += ["", README_END]
    return "\n".join(lines)


def findings_page() -> str:
    """The whole of docs/findings-list.md: every finding with its title, adapters, upstream status and evidence."""
    lines = ["<!-- generated by python3 -m bnsuite.findings --readme from bnsuite/findings.toml; do not edit -->", "",
             "# What the suite found", "", _summary("findings.md"), "",
             "| # | Finding | Kind | Severity | Adapters | Upstream status (evidence) |", "|---|---|---|---|---|---|"]
    for i, f in enumerate(_ranked(), 1):
        draft = f" Draft: [`{f.upstream_report}`](../{f.upstream_report})." if f.upstream_report else ""
        lines.append(f"| {i} | <a id=\"{f.name}\"></a>**{_cell(f.title)}** (`{f.name}`) | {f.kind} | {f.severity} | "
                     f"{', '.join(f.adapters)} | {_cell(f.status_text)}.{draft} |")
    lines += ["", "Details (source, documentation, reproduction):", ""]
    for i, f in enumerate(_ranked(), 1):
        lines.append(f"{i}. `{f.name}` ({f.versions}). Source: {f.source}."
                     + (f" Documentation: {f.documentation}." if f.documentation else "")
                     + f" Reproduce: `python {f.reproduction}`.")
    return "\n".join(lines) + "\n"


def rewrite_readme(text: str) -> str:
    """README text with the findings section replaced; ValueError when the markers are missing."""
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError("README.md has no findings markers")
    return text[:start] + readme_section() + text[end + len(README_END):]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bnsuite.findings", description="The declared findings.")
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's findings table and " + LIST_PAGE)
    ap.add_argument("--check", action="store_true", help="with --readme: exit 1 if README.md is out of date")
    args = ap.parse_args(argv)
    problems = validate()
    for p in problems:
        print(f"findings: {p}", file=sys.stderr)
    if problems:
        return 2
    if not args.readme:
        for f in FINDINGS:
            print(f"{f.kind:22s} {f.severity:6s} {f.name:50s} {f.status}")
        return 0
    path, page = os.path.join(ROOT, "README.md"), os.path.join(ROOT, *LIST_PAGE.split("/"))
    try:
        with open(path, encoding="utf-8") as fh:
            old = fh.read()
        new = rewrite_readme(old)
        old_page = open(page, encoding="utf-8").read() if os.path.exists(page) else ""
    except (OSError, ValueError) as e:
        print(f"findings: {path}: {e}", file=sys.stderr)
        return 2
    if args.check:
        if new != old or old_page != findings_page():
            print(f"findings: README.md's findings section or {LIST_PAGE} is out of date; "
                  "run python3 -m bnsuite.findings --readme", file=sys.stderr)
            return 1
        return 0
    if new != old:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(new)
    if old_page != findings_page():
        with open(page, "w", encoding="utf-8") as fh:
            fh.write(findings_page())
    print(f"README.md, {LIST_PAGE}: {len(FINDINGS)} findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
