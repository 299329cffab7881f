"""A replicas worker whose collective hangs is killed at its timeout with its whole process group, and says so."""

import pytest

from bnsuite.adapters import capabilities
from bnsuite.adapters import replicas as rp


def test_hung_collective_is_killed_with_its_children():
    res = rp.run_worker("meta_tests.broken.replicas:HungCollectiveEngine")
    assert res.error is not None and "did not finish within 6 s" in res.error, res.error
    assert res.wall_s < 30, f"the timeout took {res.wall_s:.1f} s"
    assert rp.live_in_group(res.pid) == [], "processes of the killed worker are still running"


def test_a_wrong_engine_path_is_broken_and_says_why():
    with pytest.raises(capabilities.CapabilityBroken, match="cannot be loaded"):
        rp.resolve_engine("no_such_module:Engine")
    with pytest.raises(capabilities.CapabilityBroken, match="bnsuite.adapters.replicas:ReplicaEngine"):
        rp.resolve_engine("bnsuite.adapters.replicas:plan")
