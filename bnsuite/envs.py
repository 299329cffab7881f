"""Virtual environments: the one builder that both the test groups (the main environment from the lock file) and
release drift (one environment per release set) use, and the one reading of pip's configuration behind it.

Standard library only, like the runner. uv is used where it is on PATH (several times faster), else pip;
BNSUITE_INSTALLER=pip|uv chooses. uv does not read pip's configuration itself, so the find-links and extra indexes
this machine's pip uses are passed to it (pip_config_sources).
"""

from __future__ import annotations

import configparser
import hashlib
import os
import shutil
import subprocess
import sys
import time
import venv

from bnsuite.console import fail, say

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout: requirements/, results/, report/
REQ_DIR = os.path.join(ROOT, "requirements")
LOCK = os.path.join(REQ_DIR, "lock.txt")  # every transitive dependency of all.txt, pinned (python3 -m bnsuite lock)
NODEPS = os.path.join(REQ_DIR, "nodeps.txt")  # installed with --no-deps after the lock (tf_keras)
# A checkout has requirements/ beside the package; an installed bnsuite (site-packages) does not.
CHECKOUT = os.path.isfile(os.path.join(REQ_DIR, "all.txt"))
# Where results/ and report/ go, and where the groups run: the checkout, or the current directory when installed.
BASE = ROOT if CHECKOUT else os.getcwd()
STAMP = ".bnsuite-requirements"  # inside an environment: the hash of the requirements it was built from
INSTALL_TIMEOUT_S = 1800


def pip_config_sources() -> tuple[list[str], list[str]]:
    """The find-links and extra index URLs of this machine's pip configuration (files and PIP_* variables); only local
    locations that exist and remote URLs are kept (pip only warns about the rest)."""
    files = ["/etc/pip.conf", os.path.expanduser("~/.pip/pip.conf"),
             os.path.join(os.environ.get("XDG_CONFIG_HOME", os.path.expanduser("~/.config")), "pip", "pip.conf")]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(os.environ["PIP_CONFIG_FILE"])
    cp = configparser.ConfigParser(interpolation=None)
    try:
        cp.read(files)
    except configparser.Error as e:
        fail(f"cannot read pip's configuration: {str(e).splitlines()[0]}")
    values: dict[str, list[str]] = {"find-links": [], "extra-index-url": []}
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

    return ([loc for loc in dict.fromkeys(values["find-links"]) if usable(loc)],
            [loc for loc in dict.fromkeys(values["extra-index-url"]) if usable(loc)])


def uv_source_args() -> list[str]:
    """uv arguments that make it see what pip sees: pip's find-links and extra indexes, best match across them."""
    find_links, extra = pip_config_sources()
    args = [f"--find-links={loc}" for loc in find_links] + [f"--extra-index-url={loc}" for loc in extra]
    return args + (["--index-strategy", "unsafe-best-match"] if extra else [])


UV_BOOT = os.path.join(ROOT, ".cache", "uv")  # a uv installed from PyPI by bootstrap_uv(), where none is on PATH


def uv_path() -> str | None:
    """uv on PATH, else the one bootstrap_uv() installed, else None."""
    boot = os.path.join(UV_BOOT, "bin", "uv")
    return shutil.which("uv") or (boot if os.path.exists(boot) else None)


def bootstrap_uv() -> None:
    """Install uv from PyPI into .cache/uv where none is found (many environments to build); where that fails,
    pip builds them instead."""
    if uv_path() or os.environ.get("BNSUITE_INSTALLER") == "pip":
        return
    try:
        venv.EnvBuilder(with_pip=True).create(UV_BOOT)
        subprocess.run([os.path.join(UV_BOOT, "bin", "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "uv"], check=True, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError):
        pass


def installer() -> str:
    """'uv' where it is found (uv_path), else 'pip'; BNSUITE_INSTALLER=pip|uv chooses."""
    want = os.environ.get("BNSUITE_INSTALLER", "")
    if want not in ("", "pip", "uv"):
        fail(f"BNSUITE_INSTALLER={want!r}: use pip or uv")
    if want == "uv" and uv_path() is None:
        fail("BNSUITE_INSTALLER=uv but no `uv` on PATH (pip install uv)")
    return want or ("uv" if uv_path() else "pip")


def requirements_hash(paths: list[str]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            h.update(os.path.basename(path).encode() + fh.read())
    return h.hexdigest()[:16]


def install_commands(tool: str, path: str, py: str, reqs: list[str], nodeps: list[str]) -> list[list[str]]:
    """Commands that create the environment at `path` (uv; pip's is made by venv) and install `reqs`, then `nodeps`
    with --no-deps."""
    if tool == "uv":
        uv = [uv_path() or "uv"]
        # Bytecode at install, as pip does: otherwise every group process (and every process a meta test starts)
        # compiles the frameworks' sources again wherever PYTHONDONTWRITEBYTECODE is set.
        pip = uv + ["pip", "install", "--python", py, "-q", "--compile-bytecode", *uv_source_args()]
        create = [] if os.path.exists(py) else [uv + ["venv", "-q", "--python", sys.executable, path]]
    else:
        pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        create = []
    return create + [pip + ["-r", r] for r in reqs] + [pip + ["--no-deps", "-r", r] for r in nodeps]


def build(path: str, reqs: list[str], nodeps: list[str] = (), quiet: bool = False, fresh: bool = False,
          stamp_inputs: list[str] | None = None) -> dict:
    """Create (or reuse, while its requirements are unchanged) the environment at `path` from requirement files.

    Returns {python, install_s, tool, error}: error is one line (None on success); `quiet` keeps the installer's
    output for that line instead of showing it; `fresh` removes an outdated environment first; `stamp_inputs` are the
    files whose change rebuilds it (default: the requirement files)."""
    py = os.path.join(path, "bin", "python")
    stamp = os.path.join(path, STAMP)
    want = requirements_hash(stamp_inputs or [*reqs, *nodeps])
    try:
        with open(stamp) as fh:
            if os.path.exists(py) and fh.read().strip() == want:
                return {"python": py, "install_s": 0.0, "tool": "cached", "error": None}
    except OSError:
        pass
    tool = installer()
    if fresh:
        shutil.rmtree(path, ignore_errors=True)
    t0 = time.time()
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if tool == "pip" and not os.path.exists(py):
            venv.EnvBuilder(with_pip=True).create(path)
    except OSError as e:
        return {"python": py, "install_s": 0.0, "tool": tool, "error": f"cannot create {path}: {e.strerror}"}
    for cmd in install_commands(tool, path, py, list(reqs), list(nodeps)):
        try:
            proc = subprocess.run(cmd, capture_output=quiet, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"python": py, "install_s": time.time() - t0, "tool": tool,
                    "error": f"install timed out after {INSTALL_TIMEOUT_S} s"}
        if proc.returncode != 0:
            lines = [ln for ln in ((proc.stderr or proc.stdout) or "").strip().splitlines() if ln.strip()]
            last = lines[-1] if lines else f"exit {proc.returncode}: {' '.join(cmd)}"
            return {"python": py, "install_s": time.time() - t0, "tool": tool, "error": f"{tool} failed: {last}"}
    with open(stamp, "w") as fh:
        fh.write(want + "\n")
    return {"python": py, "install_s": time.time() - t0, "tool": tool, "error": None}


def main_stamp_inputs() -> list[str]:
    """Every file of requirements/ (not the release sets under requirements/drift/): a change to any rebuilds."""
    return [os.path.join(REQ_DIR, n) for n in sorted(os.listdir(REQ_DIR)) if os.path.isfile(os.path.join(REQ_DIR, n))]


def ensure_venv(path: str | None = None) -> str:
    """The main environment (BNSUITE_VENV, default ./.venv) from the lock file, created or updated when the lock
    changed; returns its python. An install that fails is one line and exit 2."""
    path = path or os.environ.get("BNSUITE_VENV", os.path.join(ROOT, ".venv"))
    inputs = main_stamp_inputs()
    cached = os.path.exists(os.path.join(path, "bin", "python")) and _stamp(path) == requirements_hash(inputs)
    if not cached:
        say(f"bnsuite: installing the pinned frameworks into {path} (a few minutes, about 7 GB) ...")
    env = build(path, [LOCK], [NODEPS], stamp_inputs=inputs)
    if env["error"]:
        fail(env["error"])
    if not cached:
        say(f"bnsuite: environment ready in {env['install_s']:.0f} s ({env['tool']})")
    return env["python"]


def _stamp(path: str) -> str:
    try:
        with open(os.path.join(path, STAMP)) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def lock() -> int:
    """Regenerate requirements/lock.txt from requirements/all.txt with uv, seeing the packages pip sees."""
    uv = uv_path()
    if uv is None:
        fail("`python3 -m bnsuite lock` needs uv on PATH (pip install uv)")
    if not CHECKOUT:
        fail("`lock` regenerates requirements/lock.txt of a checkout; this bnsuite is installed")
    common = [uv, "pip", "compile", "--python-version", "3.11", "--no-emit-find-links", "--no-emit-index-url", "-q",
              "--custom-compile-command", "python3 -m bnsuite lock", "-c", "requirements/constraints.txt"]
    # CPU: what pip sees here (torch's CPU wheel); GPU (the self-hosted job): PyPI only, for Linux x86_64.
    cpu = common + ["requirements/all.txt", "-o", "requirements/lock.txt", *uv_source_args()]
    gpu = common + ["requirements/gpu.txt", "-o", "requirements/gpu-lock.txt", "--no-config",
                    "--python-platform", "x86_64-manylinux_2_28"]
    for cmd in (cpu, gpu):
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        if rc != 0:
            return rc
    return 0
