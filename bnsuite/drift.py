"""Behaviour drift across framework releases: the same suites over a window of releases, then one drift view.

    python3 -m bnsuite drift                 # every release set in requirements/drift/, plus the pinned set
    python3 -m bnsuite drift --only flax-0.8.5 --only pinned

A release set is one file ``requirements/drift/<name>.txt``: the pinned framework releases to install, and a first line
``# groups: <group> ...`` naming the adapter groups that run on it. The ``pinned`` set is the main environment (the
README's), running the union of those groups. Each set gets its own environment under ``.cache/drift/<name>``,
created once and reused while its file is unchanged (with uv where it is found or can be installed, else pip). A set
that cannot install is listed with the reason, never dropped silently; a group that cannot import its framework shows
its skip reason.

Results go to ``results/drift-<time>/<set>/<group>.jsonl``; the drift view (``report/drift.html``) puts every behaviour
beside every release and highlights where it changed, with the source each declaration cites for its release range.
The command prints install and run times per set. It exits 1 when a check fails on some release (a behaviour change
no declared version range covers), 0 otherwise.

torch stays at 2.13.0 in every set: it is the only torch build on this project's machines (any other release
downloads a CUDA build of several GB), so torch has no drift window; the view says so.

Standard library only, like the runner.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import venv

from bnsuite import runner

SETS_DIR = os.path.join(runner.ROOT, "requirements", "drift")
ENVS_DIR = os.path.join(runner.ROOT, ".cache", "drift")
PINNED = "pinned"
INSTALL_TIMEOUT_S = 1800
TORCH_NOTE = ("torch is 2.13.0 in every release set: its CPU wheel is the only torch build on this project's machines "
              "(other releases download multi-GB CUDA builds), so torch has no drift window here.")


def release_sets() -> dict[str, tuple[list[str], str]]:
    """name -> (groups, requirements file), from requirements/drift/*.txt."""
    sets: dict[str, tuple[list[str], str]] = {}
    for fname in sorted(os.listdir(SETS_DIR)):
        if not fname.endswith(".txt"):
            continue
        path = os.path.join(SETS_DIR, fname)
        with open(path, encoding="utf-8") as fh:
            first = fh.readline().strip()
        if not first.startswith("# groups:"):
            runner.fail(f"{os.path.relpath(path, runner.ROOT)}: the first line must be '# groups: <group> ...'")
        groups = first.split(":", 1)[1].split()
        unknown = [g for g in groups if g not in runner.GROUPS]
        if unknown:
            runner.fail(f"{os.path.relpath(path, runner.ROOT)}: unknown group {unknown[0]!r}")
        sets[fname[:-4]] = (groups, path)
    return sets


# -- environments ------------------------------------------------------------------------------------------------------
def _pip_find_links() -> list[str]:
    """The find-links locations pip is configured with (uv does not read pip's configuration by itself)."""
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    links = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip().endswith("find-links"):
            links += [v for v in value.strip().strip("'\"").split() if os.path.isdir(v)]
    return sorted(set(links))


def find_uv() -> str | None:
    """uv on PATH, else one installed from PyPI into .cache/drift/uv (None where that fails: pip is used instead)."""
    found = shutil.which("uv")
    if found:
        return found
    boot = os.path.join(ENVS_DIR, "uv")
    uv = os.path.join(boot, "bin", "uv")
    if not os.path.exists(uv):
        try:
            venv.EnvBuilder(with_pip=True).create(boot)
            subprocess.run([os.path.join(boot, "bin", "python"), "-m", "pip", "install", "-q",
                            "--disable-pip-version-check", "uv"], check=True, capture_output=True, timeout=600)
        except (OSError, subprocess.SubprocessError):
            return None
    return uv if os.path.exists(uv) else None


def ensure_env(name: str, req: str, uv: str | None) -> dict:
    """Create (or reuse) the set's environment. Returns {python, install_s, tool, error}."""
    path = os.path.join(ENVS_DIR, "envs", name)
    py = os.path.join(path, "bin", "python")
    stamp = os.path.join(path, ".bnsuite-drift")
    with open(req, "rb") as fh:
        want = hashlib.sha256(fh.read()).hexdigest()[:16]
    if os.path.exists(py) and os.path.exists(stamp) and open(stamp).read().strip() == want:
        return {"python": py, "install_s": 0.0, "tool": "cached", "error": None}
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t0 = time.time()
    links = [arg for link in _pip_find_links() for arg in ("--find-links", link)]
    if uv:
        steps = [[uv, "venv", "-q", "-p", sys.executable, path],
                 [uv, "pip", "install", "-q", "--python", py, *links, "-r", req]]
    else:
        steps = [[sys.executable, "-m", "venv", path],
                 [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", req]]
    for cmd in steps:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"python": py, "install_s": time.time() - t0, "tool": "uv" if uv else "pip",
                    "error": f"install timed out after {INSTALL_TIMEOUT_S} s"}
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
            return {"python": py, "install_s": time.time() - t0, "tool": "uv" if uv else "pip",
                    "error": f"install failed: {lines[-1] if lines else 'exit ' + str(proc.returncode)}"}
    with open(stamp, "w") as fh:
        fh.write(want + "\n")
    return {"python": py, "install_s": time.time() - t0, "tool": "uv" if uv else "pip", "error": None}


# -- running ---------------------------------------------------------------------------------------------------------
def run_set(name: str, py: str, groups: list[str], run_dir: str, jobs: int, extra: list[str]) -> list[dict]:
    chosen = [(g, runner.GROUPS[g]) for g in groups]
    return runner.run_all(py, chosen, os.path.join(run_dir, name), jobs, extra)


def write_set_record(run_dir: str, name: str, info: dict) -> None:
    """What the drift view needs beyond the results files: install outcome and times per set."""
    os.makedirs(os.path.join(run_dir, name), exist_ok=True)
    with open(os.path.join(run_dir, name, "set.json"), "w", encoding="utf-8") as fh:
        json.dump({"set": name, **info}, fh, indent=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bnsuite drift", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[], metavar="SET", help="run only these release sets")
    ap.add_argument("--jobs", type=int, default=2, help="groups run at once (default 2)")
    ap.add_argument("--run-dir", default=None, help="results folder (default results/drift-<time>)")
    ap.add_argument("--report", default=os.path.join(runner.ROOT, "report", "drift.html"), help="drift view path")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments after --")
    a = ap.parse_args(argv)

    sets = release_sets()
    union = sorted({g for groups, _ in sets.values() for g in groups}, key=list(runner.GROUPS).index)
    names = [*sets, PINNED]
    if a.only:
        unknown = [s for s in a.only if s not in names]
        if unknown:
            runner.fail(f"unknown release set {unknown[0]!r}: use one of {', '.join(names)}")
        names = [s for s in names if s in a.only]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = a.run_dir or os.path.join(runner.ROOT, "results", f"drift-{stamp}")
    extra = ["--device", "cpu", *a.pytest_args]

    uv = find_uv() if any(n != PINNED for n in names) else None
    runner.say(f"bnsuite drift: {len(names)} release sets; environments with {'uv' if uv else 'pip'}; "
               f"results in {os.path.relpath(run_dir, runner.ROOT)}")
    summary = []
    for name in names:
        if name == PINNED:
            t0 = time.time()
            py = runner.ensure_venv(os.environ.get("BNSUITE_VENV", os.path.join(runner.ROOT, ".venv")))
            env = {"python": py, "install_s": time.time() - t0, "tool": "main venv", "error": None}
            groups = union
        else:
            groups, req = sets[name]
            env = ensure_env(name, req, uv)
        info = {"groups": groups, "install_s": round(env["install_s"], 1), "tool": env["tool"],
                "error": env["error"], "run_s": 0.0, "torch_note": TORCH_NOTE}
        if env["error"]:
            runner.say(f"  {name:14s} NOT RUN: {env['error']}")
            write_set_record(run_dir, name, info)
            summary.append((name, info, []))
            continue
        t0 = time.time()
        results = run_set(name, env["python"], groups, run_dir, a.jobs, extra)
        info["run_s"] = round(time.time() - t0, 1)
        write_set_record(run_dir, name, info)
        summary.append((name, info, results))
        runner.say(f"  {name:14s} install {info['install_s']:.0f} s ({info['tool']}), run {info['run_s']:.0f} s")

    main_py = runner.ensure_venv(os.environ.get("BNSUITE_VENV", os.path.join(runner.ROOT, ".venv")))
    rc = subprocess.run([main_py, "-m", "bnsuite.reports.drift", run_dir, "-o", a.report], cwd=runner.ROOT).returncode

    runner.say("")
    runner.say("bnsuite drift summary (install s, run s, groups)")
    failed = False
    for name, info, results in summary:
        if info["error"]:
            runner.say(f"  {name:14s} not run: {info['error']}")
            continue
        runner.say(f"  {name:14s} install {info['install_s']:7.1f} s  run {info['run_s']:6.1f} s")
        for r in results:
            runner.say(f"      {runner.describe(r)}")
            failed |= bool(r["counts"].get("failed") or r["counts"].get("error"))
    runner.say(f"  drift view: {os.path.relpath(a.report, runner.ROOT)}" + ("" if rc == 0 else f" (exit {rc})"))
    runner.say(f"  {TORCH_NOTE}")
    return 1 if failed or rc != 0 else 0
