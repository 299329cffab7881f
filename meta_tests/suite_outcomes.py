"""What the meta tests that run the whole suite on one adapter (test_broken_adapters.py's real adapter,
test_minimal_adapter.py) share: the verdict that the adapter's cases ran clean."""


def assert_ran_clean(outcomes: list[dict], who: str, at_least: int) -> None:
    """No outcome record of `who` failed or errored, and at least `at_least` of them passed."""
    __tracebackhide__ = True
    bad = [(r["test"], r["reason"]) for r in outcomes if r["outcome"] in ("failed", "error")]
    assert not bad, f"{who} failed: {bad[:5]}"
    passed = [r for r in outcomes if r["outcome"] == "passed"]
    assert len(passed) >= at_least, f"only {len(passed)} cases passed on {who}"
