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

import datetime
import json
import os
import subprocess
import time

from bnsuite import envs, runner
from bnsuite.console import fail, say
from bnsuite.groups import builtin_groups

SETS_DIR = os.path.join(envs.ROOT, "requirements", "drift")
ENVS_DIR = os.path.join(envs.ROOT, ".cache", "drift")
PINNED = "pinned"
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
            fail(f"{os.path.relpath(path, envs.ROOT)}: the first line must be '# groups: <group> ...'")
        groups = first.split(":", 1)[1].split()
        unknown = [g for g in groups if g not in builtin_groups()]
        if unknown:
            fail(f"{os.path.relpath(path, envs.ROOT)}: unknown group {unknown[0]!r}")
        sets[fname[:-4]] = (groups, path)
    return sets


def ensure_env(name: str, req: str) -> dict:
    """Create (or reuse) the set's environment with the shared builder. Returns {python, install_s, tool, error}."""
    return envs.build(os.path.join(ENVS_DIR, "envs", name), [req], quiet=True, fresh=True)


# -- running ---------------------------------------------------------------------------------------------------------
def run_set(name: str, py: str, groups: list[str], run_dir: str, jobs: int, extra: list[str]) -> list[dict]:
    chosen = [(g, builtin_groups()[g]) for g in groups]
    return runner.run_all(py, chosen, os.path.join(run_dir, name), jobs, extra)


def write_set_record(run_dir: str, name: str, info: dict) -> None:
    """What the drift view needs beyond the results files: install outcome and times per set."""
    os.makedirs(os.path.join(run_dir, name), exist_ok=True)
    with open(os.path.join(run_dir, name, "set.json"), "w", encoding="utf-8") as fh:
        json.dump({"set": name, **info}, fh, indent=1)


def run(only: list[str], jobs: int, python: str | None, run_dir: str | None, report: str | None,
        pytest_args: list[str]) -> int:
    """`python3 -m bnsuite drift`: every chosen release set, then the drift view. `python` runs the pinned set (the
    main environment otherwise)."""
    report = report or os.path.join(envs.ROOT, "report", "drift.html")
    sets = release_sets()
    union = sorted({g for groups, _ in sets.values() for g in groups}, key=list(builtin_groups()).index)
    names = [*sets, PINNED]
    if only:
        unknown = [s for s in only if s not in names]
        if unknown:
            fail(f"unknown release set {unknown[0]!r}: use one of {', '.join(names)}")
        names = [s for s in names if s in only]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = runner.writable_dir(run_dir or os.path.join(envs.ROOT, "results", f"drift-{stamp}"), "results folder")
    runner.writable_dir(os.path.dirname(os.path.abspath(report)), "report folder")
    extra = ["--device", "cpu", *pytest_args]
    if any(n != PINNED for n in names):
        envs.bootstrap_uv()
    main_py = runner.python_for_groups(python)
    say(f"bnsuite drift: {len(names)} release sets; environments with {envs.installer()}; "
        f"results in {os.path.relpath(run_dir, envs.ROOT)}")
    summary = []
    for name in names:
        if name == PINNED:
            env = {"python": main_py, "install_s": 0.0, "tool": "main venv", "error": None}
            groups = union
        else:
            groups, req = sets[name]
            env = ensure_env(name, req)
        info = {"groups": groups, "install_s": round(env["install_s"], 1), "tool": env["tool"],
                "error": env["error"], "run_s": 0.0, "torch_note": TORCH_NOTE}
        if env["error"]:
            say(f"  {name:14s} NOT RUN: {env['error']}")
            write_set_record(run_dir, name, info)
            summary.append((name, info, []))
            continue
        t0 = time.time()
        results = run_set(name, env["python"], groups, run_dir, jobs, extra)
        info["run_s"] = round(time.time() - t0, 1)
        write_set_record(run_dir, name, info)
        summary.append((name, info, results))
        say(f"  {name:14s} install {info['install_s']:.0f} s ({info['tool']}), run {info['run_s']:.0f} s")

    rc = subprocess.run([main_py, "-m", "bnsuite.reports.drift", run_dir, "-o", report], cwd=envs.ROOT).returncode

    say("")
    say("bnsuite drift summary (install s, run s, groups)")
    failed = False
    for name, info, results in summary:
        if info["error"]:
            say(f"  {name:14s} not run: {info['error']}")
            continue
        say(f"  {name:14s} install {info['install_s']:7.1f} s  run {info['run_s']:6.1f} s")
        for r in results:
            say(f"      {runner.describe(r)}")
            failed |= bool(r["counts"].get("failed") or r["counts"].get("error"))
    say(f"  drift view: {os.path.relpath(report, envs.ROOT)}" + ("" if rc == 0 else f" (exit {rc})"))
    say(f"  {TORCH_NOTE}")
    return 1 if failed or rc != 0 else 0
