"""The lock installs with pip as well as with uv: uv ignores the upper bounds of a package's Requires-Python, pip
honours them, so a pin that admits only older Pythons installs with one and fails with the other."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import re

from packaging.specifiers import SpecifierSet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pins(path: str) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as fh:
        return re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", fh.read(), re.M)


def test_every_pin_admits_this_python():
    here = platform.python_version()
    refused, absent = [], []
    for name, version in pins(os.path.join(ROOT, "requirements", "lock.txt")):
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            absent.append(name)
            continue
        if dist.version != version:
            continue  # an environment other than the lock's: nothing to read for this pin
        requires = dist.metadata.get("Requires-Python")
        if requires and not SpecifierSet(requires).contains(here):
            refused.append(f"{name}=={version} (Requires-Python {requires})")
    assert not refused, (f"requirements/lock.txt pins what pip refuses on Python {here}: {', '.join(refused)}; "
                         "constrain it in requirements/constraints.txt and run `python3 -m bnsuite lock`")


def test_the_lock_honours_the_constraints():
    locked = {name.lower().replace("_", "-"): v for name, v in pins(os.path.join(ROOT, "requirements", "lock.txt"))}
    with open(os.path.join(ROOT, "requirements", "constraints.txt"), encoding="utf-8") as fh:
        lines = [ln.split("#")[0].strip() for ln in fh]
    broken = []
    for line in filter(None, lines):
        name, spec = re.match(r"([A-Za-z0-9_.\-]+)(.*)", line).groups()
        version = locked.get(name.lower().replace("_", "-"))
        if version is not None and not SpecifierSet(spec).contains(version):
            broken.append(f"{name}=={version} (constraint {spec})")
    assert not broken, f"requirements/lock.txt breaks requirements/constraints.txt: {', '.join(broken)}"
