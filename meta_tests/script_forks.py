"""Run standalone scripts as `python script.py` would, in children forked from one process that has already imported
their framework, so a batch of scripts on one framework pays its import once.

`run(scripts, env, preload, cwd, timeout)` starts this file as a server with the environment `env` (the variables a
framework reads at import, such as KERAS_BACKEND, are set before anything is imported); the server imports the modules
of `preload`, then, one script at a time, forks a child that runs the script as the interpreter runs one (its code
executed in a fresh `__main__` module, with sys.argv, sys.path[0] and `__file__` as `python script.py` sets them:
runpy.run_path would make sys.argv[0] absolute), its stdin from /dev/null and its stdout and stderr (file descriptors 1
and 2, so a framework's C++ logging too) in files. The child exits the way the interpreter does after a script:
SystemExit and uncaught exceptions unwind to the top, atexit handlers and non-daemon threads run, so its exit status is
the script's. A child that outlives `timeout` is killed with its process group.

Forking is only as safe as the parent process: the server refuses to fork when importing `preload` started a thread (a
thread pool that the child would lack, a lock held across the fork; NumPy's OpenBLAS starts one at import unless
OMP_NUM_THREADS or OPENBLAS_NUM_THREADS is 1), and reports it instead of running anything; the caller then runs those
scripts in fresh processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass


@dataclass
class Outcome:
    returncode: int | None  # None: killed after the timeout
    stdout: str
    stderr: str
    seconds: float  # wall
    cpu_seconds: float  # user + system, the script's and its waited-for children's


class ServerError(RuntimeError):
    """The server could not fork these scripts (a preload import failed, or it started threads)."""


def run(scripts: list[str], env: dict[str, str], preload: list[str], cwd: str, timeout: float) -> dict[str, Outcome]:
    """script -> its outcome; ServerError where the server could not import `preload` or would fork a threaded
    process."""
    with tempfile.TemporaryDirectory(prefix="bnsuite-forks-") as tmp:
        spec = {"preload": preload, "scripts": scripts, "timeout": timeout, "dir": tmp}
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), json.dumps(spec)], cwd=cwd, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout * len(scripts) + 120)
        done = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or len(done) != len(scripts):
            raise ServerError(f"the server for {scripts[0]} and {len(scripts) - 1} more (preload {preload}) exited "
                              f"{proc.returncode} after {len(done)} of {len(scripts)} scripts:\n{proc.stderr[-2000:]}")
        out = {}
        for i, (script, result) in enumerate(zip(scripts, done)):
            with open(os.path.join(tmp, f"{i}.out")) as o, open(os.path.join(tmp, f"{i}.err")) as e:
                out[script] = Outcome(result["returncode"], o.read(), e.read(), result["seconds"],
                                      result["cpu_seconds"])
        return out


def _child(script: str, stdout: str, stderr: str) -> None:
    """Become `python script`: never returns (the script's SystemExit or exception ends the process)."""
    os.setpgid(0, 0)
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    import builtins
    import importlib.machinery
    import types

    path = os.path.abspath(script)
    sys.argv[:] = [script]
    sys.path[0] = os.path.dirname(path)
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=path, __builtins__=builtins, __cached__=None,
                         __loader__=importlib.machinery.SourceFileLoader("__main__", path))
    sys.modules["__main__"] = main
    with open(path, "rb") as fh:
        code = compile(fh.read(), path, "exec")
    exec(code, main.__dict__)
    sys.exit(0)


def _serve(spec: dict) -> None:
    import importlib
    import select

    for name in spec["preload"]:
        importlib.import_module(name)
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        sys.exit(f"importing {spec['preload']} started {threads - 1} threads: forking would be unsafe")
    for i, script in enumerate(spec["scripts"]):
        sys.stdout.flush()
        sys.stderr.flush()
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _child(script, os.path.join(spec["dir"], f"{i}.out"), os.path.join(spec["dir"], f"{i}.err"))
        try:
            os.setpgid(pid, pid)
        except OSError:  # the child has set it (or already exited)
            pass
        pidfd = os.pidfd_open(pid)
        ready, _, _ = select.select([pidfd], [], [], spec["timeout"])
        if not ready:
            os.killpg(pid, signal.SIGKILL)
        os.close(pidfd)
        _, status, usage = os.wait4(pid, 0)
        code = os.waitstatus_to_exitcode(status) if ready else None
        print(json.dumps({"returncode": code, "seconds": time.perf_counter() - start,
                          "cpu_seconds": usage.ru_utime + usage.ru_stime}), flush=True)


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
