"""The test side of the runtimes: one worker process (bnsuite.lanes.deploy.worker) per session, asked one model at a
time with a timeout. A runtime that crashes or hangs fails that request only: the worker (started here, killed by its
own process id) is started again for the next one.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time

import numpy as np

from bnsuite.lanes.deploy.worker import RUNTIMES

TIMEOUT_S = 120.0  # one model through one runtime; a first start imports the runtime (seconds)


class RuntimeFailure(Exception):
    """The runtime refused the model, crashed or timed out; the message says which."""


class _Worker:
    def __init__(self):
        self.proc: subprocess.Popen | None = None

    def _start(self):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen([sys.executable, "-m", "bnsuite.lanes.deploy.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def ask(self, request: dict, timeout: float) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
        sel.close()
        if not ready:
            self.close()
            raise RuntimeFailure(f"{request['runtime']}: no answer within {timeout:.0f} s (worker killed)")
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            raise RuntimeFailure(f"{request['runtime']}: the runtime's process died (exit code {code})")
        return json.loads(line)


_WORKER = _Worker()
atexit.register(_WORKER.close)


def run(runtime: str, path: str, xs: list[np.ndarray], *, expose: tuple[str, ...] = (),
        timeout: float = TIMEOUT_S) -> tuple[list[list[np.ndarray]], dict]:
    """Every output of the model at `path` for each input in `xs`, run by `runtime` in the worker, and what the runtime
    reports (its operator types, its precision, its version, the seconds it took)."""
    if runtime not in RUNTIMES:
        raise KeyError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    with tempfile.TemporaryDirectory(prefix="bnsuite-rt-") as tmp:
        inputs, out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(inputs, **{f"x{i}": np.ascontiguousarray(x, np.float32) for i, x in enumerate(xs)})
        t0 = time.perf_counter()
        answer = _WORKER.ask({"runtime": runtime, "path": path, "inputs": inputs, "out": out,
                              "expose": list(expose)}, timeout)
        if not answer.get("ok"):
            raise RuntimeFailure(f"{runtime}: {answer.get('error')}")
        with np.load(out) as z:
            n_out = 1 + max(int(k.split("_")[1]) for k in z.files)
            outs = [[np.asarray(z[f"y{i}_{j}"], np.float64) for j in range(n_out)] for i in range(len(xs))]
    return outs, {**answer["info"], "seconds": time.perf_counter() - t0}
