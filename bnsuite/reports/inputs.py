"""Reading the report's input: results files and directories into records grouped by kind."""

from __future__ import annotations

import glob
import os
from collections import defaultdict

from bnsuite.reports.results import read_all


def expand(paths: list[str]) -> tuple[list[str], list[str]]:
    """Files from files and directories (all *.jsonl inside); one problem line per empty directory."""
    files, problems = [], []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(glob.glob(os.path.join(p, "**", "*.jsonl"), recursive=True))  # CI artifacts nest
            files += found
            if not found:
                problems.append(f"{p}: directory has no *.jsonl results files")
        else:
            files.append(p)
    return files, problems


def load(paths: list[str]) -> tuple[list[str], list[dict], list[str]]:
    """(files, records, problems): every valid record, one problem line per unreadable file or corrupt line."""
    files, problems = expand(paths)
    records, errors = read_all(files)
    return files, records, problems + errors


def by_kind(records: list[dict]) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        kinds[r["kind"]].append(r)
    return kinds
