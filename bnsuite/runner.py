"""Run the BatchNorm conformance matrix: one process per adapter group, then one HTML report.

The command line is bnsuite/cli.py (`python3 -m bnsuite matrix|test|groups|drift|lock`); this module runs the groups
it chose. Each group runs in its own process because Keras fixes its backend per process and TF_USE_LEGACY_KERAS must
be set before TensorFlow is imported; a group that crashes or hangs loses its own cases and nothing else. Results go to
results/<run>/<group>.jsonl, appended and flushed as measured.

Standard library only: it runs on a bare Python and starts the groups with the environment's python.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import signal
import subprocess
import sys
import time

from bnsuite import envs, groups as groups_mod, scheduling
from bnsuite.console import EXIT_HUNG, fail, say
from bnsuite.envs import BASE, CHECKOUT, LOCK, ROOT, ensure_venv, uv_source_args  # noqa: F401  (the runner's API)
from bnsuite.groups import META_GROUP, builtin_groups, pytest_targets  # noqa: F401
from bnsuite.reports import junit
from bnsuite.reports.results import ResultsWriter, read_lenient
from bnsuite.reports.screenshot import SHOTS

GROUP_TIMEOUT_S = 1200  # a group's whole run, resumptions included
OUTCOMES = ("passed", "failed", "skipped", "error")
MAX_LOST = 25  # crashed or hung cases after which a group is cut short instead of resumed again


def __getattr__(name: str):
    """`runner.GROUPS`: the groups of bnsuite/groups.py, read on first use."""
    if name == "GROUPS":
        return builtin_groups()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- running groups ---------------------------------------------------------------------------------------------------
def _records(results_path: str, kinds: tuple[str, ...]) -> list[dict]:
    """The records of these kinds, in file order; lines that are not records are the report's to name."""
    return [r for r in read_lenient(results_path) if r.get("kind") in kinds]


def _outcomes(results_path: str) -> list[dict]:
    return [r for r in _records(results_path, ("outcome",)) if r.get("outcome") in OUTCOMES]


def unfinished(results_path: str, hung: bool = False) -> str | None:
    """The last test that started and has no outcome: the one its process died in. `hung`: the plugin's watchdog
    wrote the outcome before it ended the process, so the last test started is the one."""
    done: set[str] = set()
    started: list[str] = []
    for rec in _records(results_path, ("started", "outcome")):
        if isinstance(rec.get("test"), str):
            (started.append if rec["kind"] == "started" else done.add)(rec["test"])
    left = started[-1:] if hung else [t for t in started if t not in done]
    return left[-1] if left else None


def count_outcomes(results_path: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rec in _outcomes(results_path):
        counts[rec["outcome"]] = counts.get(rec["outcome"], 0) + 1
    return counts


def main_skip_reason(results_path: str) -> str:
    """The reason most of the group's skipped cases give, with its share ("" where nothing skipped)."""
    reasons: dict[str, int] = {}
    for rec in _outcomes(results_path):
        if rec["outcome"] == "skipped":
            why = rec.get("reason", "").removeprefix("Skipped: ")
            reasons[why] = reasons.get(why, 0) + 1
    if not reasons:
        return ""
    why, n = max(reasons.items(), key=lambda kv: kv[1])
    return why if n == sum(reasons.values()) else f"{why} ({n} of {sum(reasons.values())} cases)"


def signal_name(rc: int) -> str:
    try:
        return f"{signal.Signals(-rc).name} (signal {-rc})"
    except ValueError:
        return f"signal {-rc}"


def run_group(py: str, name: str, env_extra: dict, args: list[str], run_dir: str, extra_args: list[str],
              jobs: int = 1) -> dict:
    """Run one group's pytest process; where it dies in a case (a crash, or a case hung in native code that the
    plugin's watchdog ended), record that case as failed and resume the group after it, until the group's time
    (GROUP_TIMEOUT_S) is spent. The group's file ends with a "group" record saying how it ended."""
    os.makedirs(run_dir, exist_ok=True)
    results = os.path.join(run_dir, f"{name}.jsonl")
    log = os.path.join(run_dir, f"{name}.log")
    env = {**os.environ, **scheduling.thread_env(jobs), **env_extra, "BNSUITE_GROUP": name, "PYTHONUNBUFFERED": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    for key in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS"):
        if key not in env_extra:
            env.pop(key, None)  # a group sees exactly the switches it names
    cmd = [py, "-m", "pytest", *pytest_targets(args), f"--results={results}", "-q", "-p", "no:cacheprovider",
           *extra_args]
    t0 = time.time()
    lost: list[str] = []  # cases whose process died in them
    status, reason, rc, attempts, worst = "complete", "", 0, 0, 0
    with open(log, "w") as fh:
        while True:
            attempts += 1
            resume = ["--bn-resume"] if attempts > 1 else []
            fh.write(f"\n== bnsuite: attempt {attempts}: {' '.join(cmd + resume)}\n" if resume else "")
            fh.flush()
            try:
                rc = subprocess.run(cmd + resume, cwd=BASE, env=env, stdout=fh,
                                    stderr=subprocess.STDOUT, timeout=max(1.0, t0 + GROUP_TIMEOUT_S - time.time())
                                    ).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            worst = 1 if rc == 1 or worst == 1 else worst
            if rc in (0, 1, 2, 3, 4) or (rc == 5 and attempts == 1):
                break  # the process ended on its own: its outcomes say the rest
            dead = unfinished(results, hung=rc == EXIT_HUNG)
            if rc == 5:  # a resumed run found nothing left to run
                break
            if rc == "timeout":
                why = f"the group ran out of time ({GROUP_TIMEOUT_S} s) in this case; the process was killed"
                status, reason = "cut short", f"killed after {GROUP_TIMEOUT_S} s"
            elif rc == EXIT_HUNG:
                why = ""  # the plugin's watchdog recorded the case before ending the process
            else:
                how = signal_name(rc) if isinstance(rc, int) and rc < 0 else f"exit {rc}"
                why = f"crashed: the process died with {how} in this case; its group resumed after it"
            if dead is None:  # died outside any case (start-up, collection, the end): nothing to resume after
                status, reason = "cut short", (f"killed after {GROUP_TIMEOUT_S} s, outside any case" if rc == "timeout"
                                               else f"the process died ({why.split(' in this case')[0]}) outside "
                                                    f"any case")
                _record(results, "outcome", test=f"{name}::(group)", outcome="failed", reason=reason)
                break
            lost.append(dead)
            if why:
                _record(results, "outcome", test=dead, outcome="failed", reason=why)
            if len(lost) >= MAX_LOST and status != "cut short":
                status, reason = "cut short", f"{len(lost)} cases crashed or hung; the rest were not run"
            if status == "cut short":
                break
            status = "resumed"
            say(f"        {name}: {dead} {'hung' if rc == EXIT_HUNG else 'crashed'}; resuming the group after it")
    if rc == 5 and attempts > 1:
        rc = worst
    elif status == "resumed" and rc in (0, 5):
        rc = 1
    _record(results, "group", group=name, status=status, attempts=attempts, reason=reason, lost=lost)
    junit.write_group(name, results)
    wall = time.time() - t0
    counts = count_outcomes(results)
    return {"group": name, "rc": rc, "wall_s": wall, "counts": counts, "log": log, "results": results,
            "skip_reason": main_skip_reason(results) if counts.get("skipped") else "", "status": status,
            "reason": reason, "lost": lost}


def _record(results_path: str, kind: str, **fields) -> None:
    w = ResultsWriter(results_path)
    try:
        w.write(kind, **fields)
    finally:
        w.close()


def all_skipped(r: dict) -> bool:
    """Every case skipped with its reason and nothing else happened (e.g. a framework release without the API)."""
    c = r["counts"]
    return r["rc"] == 0 and c.get("skipped", 0) > 0 and not any(c.get(k) for k in ("passed", "failed", "error"))


def describe(r: dict) -> str:
    c = r["counts"]
    parts = [f"{c.get(k, 0)} {k}" for k in ("passed", "failed", "error", "skipped") if c.get(k)]
    status = "ok" if group_ok(r) else "skip" if all_skipped(r) else "FAILED"
    rc = "" if r["rc"] in (0, 1) or r.get("status") == "cut short" else f", pytest exit {r['rc']}"
    why = f"; skipped: {r['skip_reason']}" if all_skipped(r) and r.get("skip_reason") else ""
    lost = len(r.get("lost", []))
    how = {"resumed": f"; resumed after {lost} crashed or hung case{'s' * (lost > 1)}",
           "cut short": f"; CUT SHORT: {r.get('reason')}"}.get(r.get("status", "complete"), "")
    return (f"{r['group']:18s} {status:6s} {', '.join(parts) or 'nothing collected'} in {r['wall_s']:.1f} s"
            f"{rc}{why}{how}")


def group_ok(r: dict) -> bool:
    c = r["counts"]
    return (r["rc"] == 0 and c.get("passed", 0) > 0 and not c.get("failed") and not c.get("error")
            and r.get("status", "complete") == "complete")


def closing_line(results: list[dict]) -> str:
    """`total: N passed, N failed, N skipped`, the line CI reads: a group that failed without a failed case of its
    own (killed, crashed outside a case, collected nothing, pytest's usage or internal error) counts as one failed."""
    totals: dict[str, int] = {}
    for r in results:
        for k, n in r["counts"].items():
            totals[k] = totals.get(k, 0) + n
    failed = totals.get("failed", 0) + totals.get("error", 0)
    failed += sum(1 for r in results if not group_ok(r) and not all_skipped(r)
                  and not (r["counts"].get("failed") or r["counts"].get("error")))
    return f"total: {totals.get('passed', 0)} passed, {failed} failed, {totals.get('skipped', 0)} skipped"


def run_all(py: str, groups: list, run_dir: str, jobs: int, extra_args: list[str]) -> list[dict]:
    os.makedirs(run_dir, exist_ok=True)
    done: list[dict] = []
    total = len(groups)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        # longest group first, each with its share of the cores' threads (bnsuite/scheduling.py)
        futures = {pool.submit(run_group, py, name, env, args, run_dir, extra_args, jobs): name
                   for name, (env, args) in scheduling.order(groups)}
        for fut in concurrent.futures.as_completed(futures):
            r = fut.result()
            done.append(r)
            say(f"[{len(done)}/{total}] {describe(r)}")
            if not group_ok(r):
                say(f"        log: {os.path.relpath(r['log'], BASE)}")
    order = [name for name, _ in groups]
    junit.write_merged(run_dir, order)  # one JUnit file for the run, beside each group's <group>.xml
    return sorted(done, key=lambda r: order.index(r["group"]))


def render(py: str, run_dir: str, out: str) -> int:
    r = subprocess.run([py, "-m", "bnsuite.reports.render", run_dir, "-o", out], cwd=BASE)
    if r.returncode in (0, 1) and os.path.exists(out):
        # front.png and matrix.png beside the report; each names its file, or why it is missing or blank
        try:
            subprocess.run([py, "-m", "bnsuite.reports.screenshot", out], cwd=BASE, timeout=600)
        except subprocess.TimeoutExpired:  # the results and the report stay; only the screenshots are missing
            print("screenshot: headless Chromium did not finish within 600 s; no screenshots", file=sys.stderr)
    return r.returncode


def writable_dir(path: str, what: str) -> str:
    """Create the folder `path` (and its parents) and check it takes files; one line and exit 2 where it cannot."""
    path = os.path.abspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".bnsuite-write-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        shown = os.path.relpath(path, BASE) if path.startswith(BASE + os.sep) else path
        fail(f"cannot write the {what} {shown!r}: {e.strerror or e} (choose another place with "
             f"--{'run-dir' if what.startswith('results') else 'report'})")
    return path


def python_for_groups(python: str | None) -> str:
    """--python, else the main environment of a checkout, else this interpreter (an installed bnsuite)."""
    if python:
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            fail(f"--python {python!r}: not an executable file")
        return python
    return ensure_venv() if CHECKOUT else sys.executable


def run(command: str, chosen: list, jobs: int, python: str | None, run_dir: str | None, report: str,
        pytest_args: list[str]) -> int:
    """`matrix` (groups, then the report) or `test` (groups only): the summary, and the closing line CI reads."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = writable_dir(run_dir or os.path.join(BASE, "results", stamp), "results folder")
    if command == "matrix":
        writable_dir(os.path.dirname(os.path.abspath(report)), "report folder")
    py = python_for_groups(python)
    t0 = time.time()
    say(f"bnsuite: running {len(chosen)} groups, {min(jobs, len(chosen))} at a time; "
        f"results in {os.path.relpath(run_dir, BASE)}")
    results = run_all(py, chosen, run_dir, jobs, pytest_args)
    report_rc = render(py, run_dir, report) if command == "matrix" else 0

    say("")
    say("bnsuite summary")
    for r in results:
        say(f"  {describe(r)}")
    tail = (f"; report: {os.path.relpath(report, BASE)}" + ("" if report_rc == 0 else f" (exit {report_rc})")
            if command == "matrix" else f"; results: {os.path.relpath(run_dir, BASE)}")
    # Only the screenshots this run wrote: a failed render leaves an earlier run's files, which are not this report.
    shots = [p for p in (os.path.join(os.path.dirname(os.path.abspath(report)), n) for n in SHOTS)
             if command == "matrix" and os.path.exists(p) and os.path.getmtime(p) >= t0]
    if shots:
        tail += f"; screenshots: {', '.join(os.path.relpath(p, BASE) for p in shots)}"
    say(f"  wall time {time.time() - t0:.0f} s{tail}")
    bad = [r["group"] for r in results if not group_ok(r)]
    if bad:
        say(f"  failing groups: {', '.join(bad)}")
    # The plain closing line CI reads.
    say(closing_line(results))
    return 1 if bad or report_rc != 0 else 0
