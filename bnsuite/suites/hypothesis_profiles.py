"""The Hypothesis profiles of the suites, registered once (by the plugin when a profile is chosen, by the suites that
use Hypothesis on import), so `--hypothesis-profile=NAME` and BNSUITE_HYPOTHESIS=NAME both find them.

"ci" (the default): a fixed, derandomized set of examples, identical on every run and machine.
"explore": random examples; a failure prints the falsifying example and a @reproduce_failure blob, and
`pytest --hypothesis-seed=N` replays a run.
"""

from __future__ import annotations

PROFILES = ("ci", "explore")
ENV_VAR = "BNSUITE_HYPOTHESIS"


def register() -> None:
    from hypothesis import HealthCheck, settings

    common = dict(deadline=None, database=None, print_blob=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    settings.register_profile("ci", max_examples=12, derandomize=True, **common)
    # Explicit, because a profile inherits the loaded one: where a CI variable is set, Hypothesis starts on its own
    # derandomized "ci" profile (which ours replaces by name), and "explore" must stay random there too.
    settings.register_profile("explore", max_examples=200, derandomize=False, **common)


def load_unless_chosen() -> None:
    """Where neither the option nor the variable chose a profile, the suites run "ci" (loaded by the suite module, so
    other projects' Hypothesis tests keep their own default)."""
    from hypothesis import settings

    register()
    if settings.get_current_profile_name() in ("default", "ci"):  # "ci": Hypothesis' own choice under a CI variable
        settings.load_profile("ci")
