"""The runner's groups, tox's envs and the adapters' process requirements agree, so no adapter is silently unrun."""

import configparser
import os

from bnsuite import groups, runner
from bnsuite.adapters import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tox():
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(os.path.join(ROOT, "tox.ini"))
    return cp


def test_every_builtin_adapter_has_a_group_and_a_tox_env():
    cp = _tox()
    envs = [e.strip() for e in cp["tox"]["env_list"].split(",")]
    assert set(registry.BUILTIN) == set(runner.GROUPS), "runner.GROUPS must name every built-in adapter"
    assert set(envs) == set(runner.GROUPS) | set(groups.META_NAMES), f"tox env_list {envs} differs from the runner's groups"


def test_group_environment_matches_adapter_needs():
    cp = _tox()
    for name, (env, args) in runner.GROUPS.items():
        cls = registry.load(name)
        assert args[-1] == cls.id, f"group {name} runs adapter {args[-1]}"
        for key, value in cls.process_env.items():
            assert env.get(key) == value, f"group {name} lacks {key}={value}"
            assert f"{key} = {value}" in cp[f"testenv:{name}"].get("setenv", ""), f"tox env {name} lacks {key}"
        assert f"--adapter {cls.id}" in cp[f"testenv:{name}"]["commands"]
