"""The plugin's process-level options: Hypothesis profiles, pytest-xdist, the devices to parametrize, the skip summary.

Kept apart from plugin.py (which parametrizes and records cases) so each has one job. Standard library and pytest
only at import; Hypothesis only when a profile is chosen.
"""

from __future__ import annotations

import glob
import os
import re
from collections import Counter

import pytest

from bnsuite.adapters import frameworks
from bnsuite.suites import hypothesis_profiles

# -- Hypothesis profiles ----------------------------------------------------------------------------------------------
# Chosen by `--hypothesis-profile=NAME` (Hypothesis's own option) or env BNSUITE_HYPOTHESIS; the option wins.
# Hypothesis is imported only when one is chosen (its import costs a second or more on a busy machine).
HYPOTHESIS_PROFILES = hypothesis_profiles.PROFILES
HYPOTHESIS_ENV = hypothesis_profiles.ENV_VAR


def hypothesis_profile(config) -> str:
    """The profile this run uses. A chosen one is registered, validated (an unknown name is a usage error, one line)
    and, when chosen by the variable alone, loaded; Hypothesis's own plugin loads the option's after this."""
    option = config.getoption("hypothesis_profile", None)
    env = os.environ.get(HYPOTHESIS_ENV)
    if not option and not env:
        return "ci"
    from hypothesis import settings

    hypothesis_profiles.register()
    chosen, source = (option, "--hypothesis-profile") if option else (env, HYPOTHESIS_ENV)
    try:
        settings.get_profile(chosen)
    except Exception:
        raise pytest.UsageError(f"{source}={chosen!r}: unknown Hypothesis profile; bnsuite registers "
                                f"{', '.join(HYPOTHESIS_PROFILES)}") from None
    if not option:
        settings.load_profile(chosen)
    return chosen


# -- pytest-xdist -----------------------------------------------------------------------------------------------------
XDIST_REFUSAL = ("bnsuite does not run under pytest-xdist (-n/--dist): its workers would not record measurements in "
                 "the results file; run adapter groups in parallel with `python3 -m bnsuite test --jobs N` instead")


def refuse_xdist(config) -> None:
    """pytest -n N: refused with one line (exit 4) instead of a run that silently records nothing."""
    if hasattr(config, "workerinput"):
        return
    numprocesses = config.getoption("numprocesses", None)
    dist = config.getoption("dist", "no")
    if numprocesses or (dist and dist != "no"):
        raise pytest.UsageError(XDIST_REFUSAL)


# -- devices ----------------------------------------------------------------------------------------------------------
def gpu_hardware_present() -> bool:
    """A GPU driver is present (NVIDIA or ROCm). Cheap: without one no framework can see a GPU, so no framework
    needs importing to find out."""
    return (os.path.exists("/proc/driver/nvidia/version") or bool(glob.glob("/dev/nvidia[0-9]*"))
            or os.path.exists("/dev/kfd"))


def visible_devices(adapters, known: tuple[str, ...]) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Per adapter id, the devices to parametrize when the user named none: the CPU, and a GPU where the adapter's
    framework sees one. Also: device -> why it is not parametrized (for the header), per kind, first reason."""
    hidden: dict[str, str] = {}
    per_adapter: dict[str, tuple[str, ...]] = {}
    hardware = gpu_hardware_present()
    if hardware:  # the probes below import the frameworks: in the order some of them need
        frameworks.import_early(adapters)
    for cls in adapters:
        devices = []
        for device in known:
            if device not in getattr(cls, "device_kinds", known):
                continue
            if device == "cpu":
                devices.append(device)
                continue
            if not hardware:
                hidden.setdefault(device, "no GPU driver on this machine")
                continue
            if cls.unavailable_reason() is not None:
                devices.append(device)  # an adapter that cannot run here keeps its cases: they skip with its reason
                continue
            try:
                why = cls.device_unavailable_reason(device)
            except Exception as e:  # a broken framework install: say so, do not lose the run
                why = f"{type(e).__name__}: {e}"
            if why is None:
                devices.append(device)
            else:
                hidden.setdefault(device, f"{cls.id}: {why}")
        per_adapter[cls.id] = tuple(devices)
    return per_adapter, hidden


def devices_header(explicit: bool, devices: tuple[str, ...], hidden: dict[str, str]) -> str:
    if explicit:
        return f"bnsuite devices: {', '.join(devices)} (as asked)"
    extra = "".join(f"; {d} cases not parametrized ({why}; --device {d} lists them as skips)"
                    for d, why in hidden.items())
    return f"bnsuite devices: those visible, {', '.join(d for d in devices if d not in hidden) or 'none'}{extra}"


# -- the skip summary -------------------------------------------------------------------------------------------------
_NO_GPU = re.compile(r"no (gpu|GPU)\b.*visible|no gpu visible", re.IGNORECASE)


def is_no_gpu_skip(reason: str) -> bool:
    return bool(_NO_GPU.search(reason or ""))


def skip_summary_lines(reasons: Counter) -> list[str]:
    """One line for the skips that only say "no GPU visible", then every other skip reason with its count."""
    no_gpu = sum(n for r, n in reasons.items() if is_no_gpu_skip(r))
    rest = [(r, n) for r, n in reasons.items() if not is_no_gpu_skip(r)]
    lines = [f"  {no_gpu} skipped: no GPU visible"] if no_gpu else []
    if rest:
        lines.append(f"  {sum(n for _, n in rest)} skipped for other reasons:")
        lines += [f"    {n:4d} x {r}" for r, n in sorted(rest, key=lambda t: (-t[1], t[0]))]
    return lines


# -- the results file of a run nobody asked one of --------------------------------------------------------------------
class LazyResultsWriter:
    """The default results file (no --results, no BNSUITE_RESULTS): created only once a bnsuite case records, so an
    installed bnsuite (its plugin loads in every pytest run of the environment) leaves no results/ folder in projects
    that never run its suites. Records written before that (run environment, declarations, outcomes of other tests)
    are kept and written first."""

    def __init__(self, path: str, factory):
        self.path = path
        self._factory = factory
        self._pending: list[tuple[str, dict]] = []
        self._writer = None

    def open(self) -> None:
        """Create the file now and write what was held back (OSError where it cannot be written)."""
        if self._writer is None:
            self._writer = self._factory(self.path)
            for k, f in self._pending:
                self._writer.write(k, **f)
            self._pending = []

    def write(self, kind: str, **fields) -> None:
        if self._writer is None:
            if not fields.get("adapter") or kind == "declaration":
                self._pending.append((kind, fields))
                return
            self.open()
        self._writer.write(kind, **fields)

    @property
    def opened(self) -> bool:
        return self._writer is not None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
