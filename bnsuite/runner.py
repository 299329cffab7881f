#!/usr/bin/env python3
"""Run the BatchNorm conformance matrix: one process per adapter group, then one HTML report.

    python3 -m bnsuite matrix     # the main job: every tox env (nine adapter groups + meta tests), then the HTML
                                  # report, with screenshots of its front page and its matrix beside it
    python3 -m bnsuite test       # the project's tests: the same groups without the report; both exit non-zero on
                                  # any failure, and fail if a group collected nothing
    python3 -m bnsuite groups     # list the groups
    python3 -m bnsuite drift      # the same suites over a window of framework releases (bnsuite/drift.py)

Standard library only. From a checkout it creates (or reuses) the virtual environment named by BNSUITE_VENV (default
./.venv) from the lock file requirements/lock.txt (with uv where it is on PATH, else pip; BNSUITE_INSTALLER=pip|uv
chooses), then runs everything inside it. Installed with pip (no checkout), it runs the adapter groups with the current
interpreter, results and report in the current directory. `--python PATH` runs the groups with that interpreter
instead of creating an environment. Each group runs in its own process because Keras fixes its
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
import sys
import time
import venv

from bnsuite.reports.screenshot import SHOTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout: requirements/, results/, report/
REQ_DIR = os.path.join(ROOT, "requirements")
LOCK = os.path.join(REQ_DIR, "lock.txt")  # every transitive dependency of all.txt, pinned (python3 -m bnsuite lock)
NODEPS = os.path.join(REQ_DIR, "nodeps.txt")  # installed with --no-deps after the lock (tf_keras)
# A checkout has requirements/ beside the package; an installed bnsuite (site-packages) does not.
CHECKOUT = os.path.isfile(os.path.join(REQ_DIR, "all.txt"))
# Where results/ and report/ go, and where the groups run: the checkout, or the current directory when installed.
BASE = ROOT if CHECKOUT else os.getcwd()

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


def pip_config_sources() -> tuple[list[str], list[str]]:
    """The find-links and extra index URLs of this machine's pip configuration (files and PIP_* variables), which uv
    does not read itself; only local locations that exist and remote URLs are kept (pip only warns about the rest)."""
    import configparser

    find_links: list[str] = []
    extra: list[str] = []
    files = ["/etc/pip.conf", os.path.expanduser("~/.pip/pip.conf"),
             os.path.join(os.environ.get("XDG_CONFIG_HOME", os.path.expanduser("~/.config")), "pip", "pip.conf")]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(os.environ["PIP_CONFIG_FILE"])
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(files)
    values = {"find-links": [], "extra-index-url": []}
    for section in ("global", "install"):
        for key in values:
            if cp.has_option(section, key):
                values[key] += cp.get(section, key).split()
    values["find-links"] += os.environ.get("PIP_FIND_LINKS", "").split()
    values["extra-index-url"] += os.environ.get("PIP_EXTRA_INDEX_URL", "").split()

    def usable(loc: str) -> bool:
        if loc.startswith("file://"):
            return os.path.exists(loc[len("file://"):])
        return "://" in loc or os.path.exists(loc)

    for loc in dict.fromkeys(values["find-links"]):
        if usable(loc):
            find_links.append(loc)
    for loc in dict.fromkeys(values["extra-index-url"]):
        if usable(loc):
            extra.append(loc)
    return find_links, extra


def uv_source_args() -> list[str]:
    """uv arguments that make it see what pip sees: pip's find-links and extra indexes, best match across them."""
    find_links, extra = pip_config_sources()
    args = [f"--find-links={loc}" for loc in find_links] + [f"--extra-index-url={loc}" for loc in extra]
    return args + (["--index-strategy", "unsafe-best-match"] if extra else [])


def installer() -> str:
    """'uv' where it is on PATH (several times faster), else 'pip'; BNSUITE_INSTALLER=pip|uv chooses."""
    want = os.environ.get("BNSUITE_INSTALLER", "")
    if want not in ("", "pip", "uv"):
        fail(f"BNSUITE_INSTALLER={want!r}: use pip or uv")
    if want == "uv" and shutil.which("uv") is None:
        fail("BNSUITE_INSTALLER=uv but no `uv` on PATH (pip install uv)")
    return want or ("uv" if shutil.which("uv") else "pip")


def install_commands(tool: str, path: str, py: str) -> list[list[str]]:
    """Commands that create the environment at `path` and install the lock file, then the no-deps packages."""
    if tool == "uv":
        uv = [shutil.which("uv") or "uv"]
        pip = uv + ["pip", "install", "--python", py, "-q", *uv_source_args()]
        create = [] if os.path.exists(py) else [uv + ["venv", "-q", "--python", sys.executable, path]]
        return create + [pip + ["-r", LOCK], pip + ["--no-deps", "-r", NODEPS]]
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    return [pip + ["-r", LOCK], pip + ["--no-deps", "-r", NODEPS]]


def ensure_venv(path: str) -> str:
    """Create or update the venv when the requirements changed; return its python."""
    py = os.path.join(path, "bin", "python")
    stamp = os.path.join(path, ".bnsuite-requirements")
    want = _req_hash()
    if os.path.exists(py) and os.path.exists(stamp) and open(stamp).read().strip() == want:
        return py
    tool = installer()
    say(f"bnsuite: installing the pinned frameworks into {path} with {tool} (a few minutes, about 3 GB) ...")
    t0 = time.time()
    if tool == "pip" and not os.path.exists(py):
        venv.EnvBuilder(with_pip=True).create(path)
    for cmd in install_commands(tool, path, py):
        r = subprocess.run(cmd)
        if r.returncode != 0:
            fail(f"{tool} failed (exit {r.returncode}): {' '.join(cmd)}")
    with open(stamp, "w") as fh:
        fh.write(want + "\n")
    say(f"bnsuite: environment ready in {time.time() - t0:.0f} s ({tool})")
    return py


def lock() -> int:
    """Regenerate requirements/lock.txt from requirements/all.txt with uv, seeing the packages pip sees."""
    uv = shutil.which("uv")
    if uv is None:
        fail("`python3 -m bnsuite lock` needs uv on PATH (pip install uv)")
    common = [uv, "pip", "compile", "--python-version", "3.11", "--no-emit-find-links", "--no-emit-index-url", "-q",
              "--custom-compile-command", "python3 -m bnsuite lock"]
    # CPU: what pip sees here (torch's CPU wheel); GPU (the self-hosted job): PyPI only, for Linux x86_64.
    cpu = common + ["requirements/all.txt", "-o", "requirements/lock.txt", *uv_source_args()]
    gpu = common + ["requirements/gpu.txt", "-o", "requirements/gpu-lock.txt", "--no-config",
                    "--python-platform", "x86_64-manylinux_2_28"]
    for cmd in (cpu, gpu):
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        if rc != 0:
            return rc
    return 0


def pytest_targets(args: list[str]) -> list[str]:
    """A group's pytest arguments; installed (no checkout), the suites' paths become --pyargs module names."""
    if CHECKOUT:
        return list(args)
    out = ["--pyargs"]
    for a in args:
        out.append(a.rstrip("/").replace("/", ".") if a.startswith("bnsuite/") else a)
    return out


# -- running groups ---------------------------------------------------------------------------------------------------
def _outcomes(results_path: str) -> list[dict]:
    recs = []
    try:
        with open(results_path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("kind") == "outcome":
                    recs.append(rec)
    except OSError:
        pass
    return recs


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


def run_group(py: str, name: str, env_extra: dict, args: list[str], run_dir: str, extra_args: list[str]) -> dict:
    results = os.path.join(run_dir, f"{name}.jsonl")
    log = os.path.join(run_dir, f"{name}.log")
    env = {**os.environ, **env_extra, "BNSUITE_GROUP": name, "PYTHONUNBUFFERED": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    for key in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS"):
        if key not in env_extra:
            env.pop(key, None)  # a group sees exactly the switches it names
    cmd = [py, "-m", "pytest", *pytest_targets(args), f"--results={results}", "-q", "-p", "no:cacheprovider",
           *extra_args]
    t0 = time.time()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(cmd, cwd=BASE, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                timeout=GROUP_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.time() - t0
    counts = count_outcomes(results)
    return {"group": name, "rc": rc, "wall_s": wall, "counts": counts, "log": log, "results": results,
            "skip_reason": main_skip_reason(results) if counts.get("skipped") else ""}


def all_skipped(r: dict) -> bool:
    """Every case skipped with its reason and nothing else happened (e.g. a framework release without the API)."""
    c = r["counts"]
    return r["rc"] == 0 and c.get("skipped", 0) > 0 and not any(c.get(k) for k in ("passed", "failed", "error"))


def describe(r: dict) -> str:
    c = r["counts"]
    parts = [f"{c.get(k, 0)} {k}" for k in ("passed", "failed", "error", "skipped") if c.get(k)]
    status = "ok" if group_ok(r) else "skip" if all_skipped(r) else "FAILED"
    rc = "" if r["rc"] in (0, 1) else f", pytest exit {r['rc']}"
    why = f"; skipped: {r['skip_reason']}" if all_skipped(r) and r.get("skip_reason") else ""
    return f"{r['group']:18s} {status:6s} {', '.join(parts) or 'nothing collected'} in {r['wall_s']:.1f} s{rc}{why}"


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
                say(f"        log: {os.path.relpath(r['log'], BASE)}")
    order = [name for name, _ in groups]
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["drift"]:
        from bnsuite import drift

        return drift.main(argv[1:])
    ap = argparse.ArgumentParser(prog="python3 -m bnsuite", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["matrix", "test", "groups", "lock", "drift"])
    ap.add_argument("--only", action="append", default=[], metavar="GROUP", help="run only these groups")
    ap.add_argument("--jobs", type=int, default=2, help="groups run at once (default 2)")
    ap.add_argument("--report", default=os.path.join(BASE, "report", "index.html"), help="report path")
    ap.add_argument("--python", default=os.environ.get("BNSUITE_PYTHON"), metavar="PATH",
                    help="run the groups with this interpreter instead of creating the environment (env "
                         "BNSUITE_PYTHON; the default when bnsuite is installed rather than run from a checkout)")
    ap.add_argument("--run-dir", default=None, help="results folder (default results/<time>)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments after --")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # everything after -- goes to pytest as is
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.pytest_args = [*a.pytest_args, *extra]

    if a.command == "groups":
        for name, (env, args) in [*builtin_groups().items(), META_GROUP]:
            say(f"{name:18s} {' '.join(f'{k}={v}' for k, v in env.items()) or '-':28s} pytest {' '.join(args)}")
        return 0
    if a.command == "lock":
        if not CHECKOUT:
            fail("`lock` regenerates requirements/lock.txt of a checkout; this bnsuite is installed")
        return lock()
    # The meta tests are not shipped: an installed bnsuite runs the adapter groups only. The main job (matrix) leaves
    # the slow meta tests (a fresh install of the package) to `test`.
    meta = (META_GROUP[0], (META_GROUP[1][0], [*META_GROUP[1][1], "-m", "not slow"])) \
        if a.command == "matrix" else META_GROUP
    groups = ([meta] if CHECKOUT else []) + list(builtin_groups().items())
    if a.only:
        known = dict(groups)
        unknown = [g for g in a.only if g not in known]
        if unknown:
            fail(f"unknown group {unknown[0]!r}: use one of {', '.join(known)}")
        groups = [(g, known[g]) for g in a.only]

    if a.python:
        py = a.python
    elif CHECKOUT:
        py = ensure_venv(os.environ.get("BNSUITE_VENV", os.path.join(ROOT, ".venv")))
    else:
        py = sys.executable
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = os.path.abspath(a.run_dir or os.path.join(BASE, "results", stamp))
    t0 = time.time()
    say(f"bnsuite: running {len(groups)} groups, {a.jobs} at a time; results in {os.path.relpath(run_dir, BASE)}")
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
    report = (f"; report: {os.path.relpath(a.report, BASE)}" + ("" if report_rc == 0 else f" (exit {report_rc})")
              if a.command == "matrix" else f"; results: {os.path.relpath(run_dir, BASE)}")
    shots = [p for p in (os.path.join(os.path.dirname(os.path.abspath(a.report)), n) for n in SHOTS)
             if a.command == "matrix" and os.path.exists(p)]
    if shots:
        report += f"; screenshots: {', '.join(os.path.relpath(p, BASE) for p in shots)}"
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
