"""The documentation holds together: every relative link in README.md and docs/*.md points at an existing file (and
at an existing anchor where it names one), every docs page is in the index docs/README.md, and docs/results.md
documents every record kind of the results schema with its required fields; the README gives the two commands and
links its answers into the report."""

from __future__ import annotations

import glob
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
# written by `python3 -m bnsuite matrix` / `drift`, absent from a fresh clone: their anchors are the templates' ids
GENERATED = {"report/index.html", "report/drift.html"}
TEMPLATES = os.path.join(ROOT, "bnsuite", "reports", "templates")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _read(rel: str) -> str:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as fh:
        return fh.read()


def _links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks and inline code are not links
    return LINK.findall(re.sub(r"`[^`\n]*`", "", text))


def _anchors(text: str) -> set[str]:
    """The anchors a markdown page offers: explicit ids and GitHub's heading slugs."""
    ids = set(re.findall(r'id="([^"]+)"', text))
    for heading in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        ids.add(slug)
    return ids


def _template_ids() -> set[str]:
    ids = set()
    for path in glob.glob(os.path.join(TEMPLATES, "*.j2")):
        with open(path, encoding="utf-8") as fh:
            ids |= set(re.findall(r'id="([a-z0-9_-]+)"', fh.read()))
    return ids


def test_every_relative_link_resolves():
    broken, report_ids = [], _template_ids()
    for page in PAGES:
        for link in _links(_read(page)):
            if re.match(r"^[a-z]+:", link):  # https:, mailto:
                continue
            target, _, anchor = link.partition("#")
            rel = os.path.normpath(os.path.join(os.path.dirname(page), target)) if target else page
            rel = rel.replace(os.sep, "/")
            if rel in GENERATED:
                if anchor and anchor not in report_ids:
                    broken.append(f"{page}: {link} (no id={anchor!r} in {os.path.relpath(TEMPLATES, ROOT)})")
                continue
            if not os.path.exists(os.path.join(ROOT, rel)):
                broken.append(f"{page}: {link} (no file {rel})")
            elif anchor and rel.endswith(".md") and anchor not in _anchors(_read(rel)):
                broken.append(f"{page}: {link} (no anchor #{anchor} in {rel})")
    assert not broken, "broken relative links:\n  " + "\n  ".join(broken)


def test_the_index_lists_every_docs_page():
    index = {os.path.normpath(os.path.join("docs", t.partition("#")[0])).replace(os.sep, "/")
             for t in _links(_read("docs/README.md"))}
    missing = [p for p in PAGES if p.startswith("docs/") and p != "docs/README.md" and p not in index]
    assert not missing, f"docs pages missing from the index docs/README.md: {missing}"


def test_the_results_page_documents_every_record_kind():
    schema = json.loads(_read("bnsuite/reports/results.schema.json"))
    page = _read("docs/results.md")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_]+)` \|.*$", page, flags=re.M)}
    problems = []
    for rule in schema["allOf"]:
        kind = rule["if"]["properties"]["kind"]["const"]
        if kind not in rows:
            problems.append(f"kind {kind!r} has no row")
            continue
        required = rows[kind].split("|")[3]
        problems += [f"kind {kind!r}: required field {f!r} not listed" for f in rule["then"].get("required", [])
                     if f"`{f}`" not in required]
    assert set(schema["properties"]["kind"]["enum"]) <= set(rows), "docs/results.md lacks a kind of the schema's enum"
    assert not problems, "docs/results.md differs from bnsuite/reports/results.schema.json:\n  " + "\n  ".join(problems)


def test_the_readme_gives_the_two_commands_and_the_answers():
    readme = _read("README.md")
    commands = readme.split("## The two commands", 1)[-1].split("\n## ", 1)[0]
    for line in ("python3 -m bnsuite matrix", "python3 -m bnsuite test"):
        assert line in commands, f"README.md's 'The two commands' lacks {line!r}"
    answers = readme.split("## What it answers", 1)[-1].split("\n## ", 1)[0]
    linked = {link.partition("#")[2] for link in _links(answers) if link.startswith("report/index.html#")}
    assert {"porting", "freeze", "batch-size", "findings", "matrix"} <= linked, \
        f"README.md's 'What it answers' links only these report sections: {sorted(linked)}"
