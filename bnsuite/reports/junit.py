"""JUnit XML from results files, for CI dashboards: one <testsuite> per group, written next to its JSON lines
(results/<run>/<group>.xml), and one merged <testsuites> file for the run (results/<run>/junit.xml).

A case is a <testcase> named by its pytest id (classname: the module path, dotted, with its class); failed cases
carry <failure>, errors <error>, skipped cases <skipped>, each with the recorded reason. A case that crashed or hung
its process is the failed outcome the runner recorded for it. Times come from the "started" records: a case's time
runs from its start to the next case's (its tear-down included). Standard library only (the runner writes these).

    python -m bnsuite.reports.junit RESULTS_DIR     # (re)write every <group>.xml and junit.xml of a run
"""

from __future__ import annotations

import datetime
import glob
import os
import socket
import sys
import xml.etree.ElementTree as ET

from bnsuite.reports.results import read_lenient

MERGED = "junit.xml"


def _records(path: str) -> list[dict]:
    """The records that name a test; bad lines are the report's to name, JUnit shows what was measured."""
    return [r for r in read_lenient(path) if isinstance(r.get("test"), str)]


def _names(nodeid: str) -> tuple[str, str]:
    """(classname, name) of a pytest node id: 'a/test_x.py::TestY::test_z[p]' -> ('a.test_x.TestY', 'test_z[p]')."""
    parts = nodeid.split("::")
    module = parts[0].removesuffix(".py").lstrip("./").replace("/", ".")
    return ".".join([module, *parts[1:-1]]), parts[-1]


def testsuite(group: str, results_path: str) -> ET.Element:
    recs = _records(results_path)
    starts: dict[str, float] = {}
    order: list[str] = []
    for r in recs:
        if r.get("kind") == "started" and isinstance(r.get("t"), (int, float)):
            starts.setdefault(r["test"], r["t"])
            order.append(r["test"])
    durations = {t: max(0.0, starts[n] - starts[t]) for t, n in zip(order, order[1:])}
    suite = ET.Element("testsuite", name=group, hostname=socket.gethostname(),
                       timestamp=datetime.datetime.now().isoformat(timespec="seconds"))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for r in recs:
        if r.get("kind") != "outcome":
            continue
        classname, name = _names(r["test"])
        case = ET.SubElement(suite, "testcase", classname=classname, name=name,
                             time=f"{durations.get(r['test'], 0.0):.3f}")
        reason = str(r.get("reason", ""))
        counts["tests"] += 1
        outcome = r.get("outcome")
        if outcome == "failed":
            counts["failures"] += 1
            ET.SubElement(case, "failure", message=reason[:1000]).text = reason
        elif outcome == "error":
            counts["errors"] += 1
            ET.SubElement(case, "error", message=reason[:1000]).text = reason
        elif outcome == "skipped":
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=reason.removeprefix("Skipped: ")[:1000])
        if r.get("adapter"):
            props = ET.SubElement(case, "properties")
            for key in ("adapter", "device", "dtype"):
                if r.get(key):
                    ET.SubElement(props, "property", name=key, value=str(r[key]))
    for key, n in counts.items():
        suite.set(key, str(n))
    suite.set("time", f"{sum(durations.values()):.3f}")
    return suite


def _write(root: ET.Element, path: str) -> None:
    ET.indent(root)
    tmp = f"{path}.tmp{os.getpid()}"
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)  # a reader never sees half a file


def write_group(group: str, results_path: str) -> str:
    """<group>.xml beside <group>.jsonl; returns its path."""
    out = os.path.splitext(results_path)[0] + ".xml"
    _write(testsuite(group, results_path), out)
    return out


def write_merged(run_dir: str, groups: list[str] | None = None) -> str:
    """junit.xml: one <testsuite> per group's results file in run_dir (all *.jsonl, or these groups)."""
    paths = [os.path.join(run_dir, f"{g}.jsonl") for g in groups] if groups is not None else \
        sorted(glob.glob(os.path.join(run_dir, "*.jsonl")))
    root = ET.Element("testsuites", name="bnsuite")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for p in paths:
        suite = testsuite(os.path.splitext(os.path.basename(p))[0], p)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
    for key, n in totals.items():
        root.set(key, str(n))
    out = os.path.join(run_dir, MERGED)
    _write(root, out)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not os.path.isdir(args[0]):
        print("usage: python -m bnsuite.reports.junit RESULTS_DIR", file=sys.stderr)
        return 2
    for p in sorted(glob.glob(os.path.join(args[0], "*.jsonl"))):
        write_group(os.path.splitext(os.path.basename(p))[0], p)
    print(write_merged(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
