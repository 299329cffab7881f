"""Import-order traps: a framework that cannot be imported after another one in the same process. Each adapter
declares its trap as a probe that runs the failing order in a fresh process (a crash costs that process only), and
refuses to start where the other framework is already imported."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import ClassVar


def import_after(first: str, then: str) -> str:
    """`import first; import then` in a fresh process: "ok", "crash:<SIGNAL>", "error:<ExceptionClass>" (the last
    line of a traceback), "exit <code>" or "timeout"."""
    try:
        proc = subprocess.run([sys.executable, "-c", f"import {first}; import {then}"], capture_output=True,
                              text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "timeout"
    if proc.returncode < 0:
        return f"crash:{signal.Signals(-proc.returncode).name}"
    if proc.returncode == 0:
        return "ok"
    name = (proc.stderr.strip().splitlines() or [""])[-1].split(":")[0]
    return f"error:{name}" if name.endswith("Error") else f"exit {proc.returncode}"


class ImportTrap:
    """Mixed in before the adapter's base classes: the adapter refuses to start (unavailable_reason) where the module
    named by `import_trap` is already imported and its own framework (`requires[0]`) is not yet.

    `import_trap` = (that module, its name as shown, what importing the framework after it does, the declared trap's
    probe property)."""

    import_trap: ClassVar[tuple[str, str, str, str]]

    @classmethod
    def unavailable_reason(cls):
        why = super().unavailable_reason()
        earlier, shown, fails, trap = cls.import_trap
        module = cls.requires[0]
        if why is None and earlier in sys.modules and module not in sys.modules:
            return (f"{shown} is already imported in this process, and importing {module} after it {fails} "
                    f"(declared trap {trap}); run {cls.id} in its own process: `tox -e {cls.id}`")
        return why
