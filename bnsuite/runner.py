#!/usr/bin/env python3
"""Run the BatchNorm conformance matrix: one process per adapter group, then one HTML report.

    python3 -m bnsuite matrix     # the main job: every tox env (nine adapter groups + meta tests), then the HTML
                                  # report and a screenshot of its matrix
    python3 -m bnsuite test       # the project's tests: the same groups without the report; both exit non-zero on
                                  # any failure, and fail if a group collected nothing
    python3 -m bnsuite groups     # list the groups
    python3 -m bnsuite drift      # the same suites over a window of framework releases (bnsuite/drift.py)

Standard library only: it creates (or reuses) the virtual environment named by BNSUITE_VENV (default ./.venv) with the
pinned requirements, then runs everything inside it. Each group runs in its own process because Keras fixes its
backend per process and TF_USE_LEGACY_KERAS must be set before TensorFlow is imported; a group that crashes or hangs
loses its own cases and nothing else. Results go to results/<run>/<group>.jsonl, appended and flushed as measured.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import sys
import time
import venv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout: requirements/, results/, report/
REQ_DIR = os.path.join(ROOT, "requirements")

# group -> (environment, pytest arguments): one group per built-in adapter, derived by builtin_groups(); tox.ini and
# the workflow are kept in step with it by meta_tests/test_groups.py.
_GROUPS: dict[str, tuple[dict[str, str], list[str]]] = {}
META_GROUP = ("meta", ({}, ["meta_tests"]))
GROUP_TIMEOUT_S = 1200


def builtin_groups() -> dict[str, tuple[dict[str, str], list[str]]]:
    """group -> (environment, pytest arguments), one per built-in adapter: the ids and their order from
    bnsuite/adapters/registry.py BUILTIN, the environment from each adapter class's `process_env`.

    The adapter modules need NumPy; where this interpreter lacks it (the runner itself is standard library only), the
    virtual environment's python reads them.
    """
    if not _GROUPS:
        try:
            from bnsuite.adapters import registry

            envs = {i: dict(registry.load(i).process_env) for i in registry.BUILTIN}
        except ImportError:
            py = ensure_venv(os.environ.get("BNSUITE_VENV", os.path.join(ROOT, ".venv")))
            code = ("import json; from bnsuite.adapters import registry; "
                    "print(json.dumps({i: dict(registry.load(i).process_env) for i in registry.BUILTIN}))")
            out = subprocess.run([py, "-c", code], cwd=ROOT, capture_output=True, text=True)
            if out.returncode != 0:
                fail(f"cannot read the adapter registry: {out.stderr.strip().splitlines()[-1:]}")
            envs = json.loads(out.stdout)
        _GROUPS.update({i: (env, ["bnsuite/suites", "--adapter", i]) for i, env in envs.items()})
    return _GROUPS


def __getattr__(name: str):
    """`runner.GROUPS` for other modules (benchmarks, meta tests): builtin_groups(), read on first use."""
    if name == "GROUPS":
        return builtin_groups()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def say(msg: str) -> None:
    print(msg, flush=True)


def fail(msg: str, code: int = 2) -> "None":
    print(f"bnsuite: error: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(code)


# -- the virtual environment ------------------------------------------------------------------------------------------
def _req_hash() -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(REQ_DIR)):
        if not os.path.isfile(os.path.join(REQ_DIR, name)):
            continue  # requirements/drift/: release sets, each with its own environment
        with open(os.path.join(REQ_DIR, name), "rb") as fh:
            h.update(name.encode() + fh.read())
    return h.hexdigest()[:16]


def ensure_venv(path: str) -> str:
    """Create or update the venv when the requirements changed; return its python."""
    py = os.path.join(path, "bin", "python")
    stamp = os.path.join(path, ".bnsuite-requirements")
    want = _req_hash()
    if os.path.exists(py) and os.path.exists(stamp) and open(stamp).read().strip() == want:
        return py
    say(f"bnsuite: installing the pinned frameworks into {path} (a few minutes, about 3 GB) ...")
    t0 = time.time()
    if not os.path.exists(py):
        venv.EnvBuilder(with_pip=True).create(path)
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    for cmd in (pip + ["-r", os.path.join(REQ_DIR, "all.txt")],
                pip + ["--no-deps", "-r", os.path.join(REQ_DIR, "nodeps.txt")]):
        r = subprocess.run(cmd)
        if r.returncode != 0:
            fail(f"pip install failed (exit {r.returncode}): {' '.join(cmd[3:])}")
    with open(stamp, "w") as fh:
        fh.write(want + "\n")
    say(f"bnsuite: environment ready in {time.time() - t0:.0f} s")
    return py


# -- running groups ---------------------------------------------------------------------------------------------------
def count_outcomes(results_path: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    try:
        with open(results_path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("kind") == "outcome":
                    counts[rec["outcome"]] = counts.get(rec["outcome"], 0) + 1
    except OSError:
        pass
    return counts


def run_group(py: str, name: str, env_extra: dict, args: list[str], run_dir: str, extra_args: list[str]) -> dict:
    results = os.path.join(run_dir, f"{name}.jsonl")
    log = os.path.join(run_dir, f"{name}.log")
    env = {**os.environ, **env_extra, "BNSUITE_GROUP": name, "PYTHONUNBUFFERED": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    for key in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS"):
        if key not in env_extra:
            env.pop(key, None)  # a group sees exactly the switches it names
    cmd = [py, "-m", "pytest", *args, f"--results={results}", "-q", "-p", "no:cacheprovider", *extra_args]
    t0 = time.time()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                timeout=GROUP_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.time() - t0
    counts = count_outcomes(results)
    return {"group": name, "rc": rc, "wall_s": wall, "counts": counts, "log": log, "results": results}


def describe(r: dict) -> str:
    c = r["counts"]
    parts = [f"{c.get(k, 0)} {k}" for k in ("passed", "failed", "error", "skipped") if c.get(k)]
    status = "ok" if group_ok(r) else "FAILED"
    rc = "" if r["rc"] in (0, 1) else f", pytest exit {r['rc']}"
    return f"{r['group']:18s} {status:6s} {', '.join(parts) or 'nothing collected'} in {r['wall_s']:.1f} s{rc}"


def group_ok(r: dict) -> bool:
    c = r["counts"]
    return r["rc"] == 0 and c.get("passed", 0) > 0 and not c.get("failed") and not c.get("error")


def run_all(py: str, groups: list, run_dir: str, jobs: int, extra_args: list[str]) -> list[dict]:
    os.makedirs(run_dir, exist_ok=True)
    done: list[dict] = []
    total = len(groups)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_group, py, name, env, args, run_dir, extra_args): name
                   for name, (env, args) in groups}
        for fut in concurrent.futures.as_completed(futures):
            r = fut.result()
            done.append(r)
            say(f"[{len(done)}/{total}] {describe(r)}")
            if not group_ok(r):
                say(f"        log: {os.path.relpath(r['log'], ROOT)}")
    order = [name for name, _ in groups]
    return sorted(done, key=lambda r: order.index(r["group"]))


def render(py: str, run_dir: str, out: str) -> int:
    r = subprocess.run([py, "-m", "bnsuite.reports.render", run_dir, "-o", out], cwd=ROOT)
    if r.returncode in (0, 1) and os.path.exists(out):
        screenshot(out)
    return r.returncode


def screenshot(html: str) -> None:
    """Keep a PNG of the report's top (the behaviour matrix) beside it, where headless Chromium is installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        say("bnsuite: no chromium found; no screenshot of the report")
        return
    png = os.path.join(os.path.dirname(os.path.abspath(html)), "matrix.png")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1900,1500",
                        "file://" + os.path.abspath(html)], capture_output=True, timeout=120)
    if os.path.exists(png):
        say(f"bnsuite: screenshot of the matrix: {os.path.relpath(png, ROOT)}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["drift"]:
        from bnsuite import drift

        return drift.main(argv[1:])
    ap = argparse.ArgumentParser(prog="python3 -m bnsuite", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["matrix", "test", "groups", "drift"])
    ap.add_argument("--only", action="append", default=[], metavar="GROUP", help="run only these groups")
    ap.add_argument("--jobs", type=int, default=2, help="groups run at once (default 2)")
    ap.add_argument("--report", default=os.path.join(ROOT, "report", "index.html"), help="report path")
    ap.add_argument("--run-dir", default=None, help="results folder (default results/<time>)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments after --")
    a = ap.parse_args(argv)

    if a.command == "groups":
        for name, (env, args) in [*builtin_groups().items(), META_GROUP]:
            say(f"{name:18s} {' '.join(f'{k}={v}' for k, v in env.items()) or '-':28s} pytest {' '.join(args)}")
        return 0
    groups = [META_GROUP] + list(builtin_groups().items())
    if a.only:
        known = dict(groups)
        unknown = [g for g in a.only if g not in known]
        if unknown:
            fail(f"unknown group {unknown[0]!r}: use one of {', '.join(known)}")
        groups = [(g, known[g]) for g in a.only]

    py = ensure_venv(os.environ.get("BNSUITE_VENV", os.path.join(ROOT, ".venv")))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = a.run_dir or os.path.join(ROOT, "results", stamp)
    t0 = time.time()
    say(f"bnsuite: running {len(groups)} groups, {a.jobs} at a time; results in {os.path.relpath(run_dir, ROOT)}")
    results = run_all(py, groups, run_dir, a.jobs, a.pytest_args)
    report_rc = render(py, run_dir, a.report) if a.command == "matrix" else 0

    totals: dict[str, int] = {}
    for r in results:
        for k, n in r["counts"].items():
            totals[k] = totals.get(k, 0) + n
    say("")
    say("bnsuite summary")
    for r in results:
        say(f"  {describe(r)}")
    report = (f"; report: {os.path.relpath(a.report, ROOT)}" + ("" if report_rc == 0 else f" (exit {report_rc})")
              if a.command == "matrix" else f"; results: {os.path.relpath(run_dir, ROOT)}")
    say(f"  wall time {time.time() - t0:.0f} s{report}")
    bad = [r["group"] for r in results if not group_ok(r)]
    if bad:
        say(f"  failing groups: {', '.join(bad)}")
    # The plain closing line CI reads.
    say(f"total: {totals.get('passed', 0)} passed, {totals.get('failed', 0) + totals.get('error', 0)} failed, "
        f"{totals.get('skipped', 0)} skipped")
    return 1 if bad or report_rc != 0 else 0


def entry() -> int:
    """The console entry point: main() with Ctrl-C turned into one line."""
    try:
        return main()
    except KeyboardInterrupt:
        fail("interrupted; results measured so far are in results/", 130)
        return 130


if __name__ == "__main__":
    sys.exit(entry())
