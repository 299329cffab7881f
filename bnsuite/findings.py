"""Findings: surprises in a framework (a divergence from its documentation, from the other frameworks, or from itself
across code paths or releases), each declared ONCE here as data.

The README's findings section, the report's findings list and the failure messages of the checks that demonstrate a
finding all come from these declarations. Each finding has a standalone reproduction ``findings/<name>.py`` at the
root of the checkout: it imports only its framework and NumPy, builds the layer AND its input (seeded), prints the
observed and the expected value (with the words "observed" and "expected"), and exits 1 while the behaviour is
present, 0 once it is gone, 2 on any other error.

Standard library only: the report and the README generator import this module without any framework.
"""

from __future__ import annotations

import dataclasses

SEVERITIES = ("high", "medium", "low")  # high: silently wrong numbers or training; medium: a trap with a loud symptom
# or a documented-but-surprising default; low: a cosmetic or well-documented divergence.


@dataclasses.dataclass(frozen=True)
class Finding:
    name: str  # snake_case; the reproduction is findings/<name>.py
    title: str  # one sentence a user understands without the suite
    area: str  # the semantic area: "porting", "freeze", "batch-size", "precision", "replicas", "inputs", "norms", ...
    adapters: tuple[str, ...]  # adapter ids affected
    versions: str  # the framework versions it was observed on, e.g. "keras 3.15.1"
    severity: str  # one of SEVERITIES
    source: str  # the framework source (file and function or line) or documentation that explains it
    upstream: str | None  # "owner/repo#N" (with its state, e.g. "closed, guide edit only") or None: not reported
    properties: tuple[str, ...]  # property names whose checks demonstrate it (written whole, greppable)


FINDINGS: list[Finding] = [
    # -- mixed precision (suites/test_mixed_precision.py) --------------------------------------------------------------
    Finding(
        name="flax_param_dtype_output_dtype",
        title="flax.nnx.BatchNorm(param_dtype=bfloat16) returns float32 where flax.linen.BatchNorm with the same "
              "arguments returns bfloat16: NNX promotes the input with the float32 running statistics",
        area="precision",
        adapters=("flax-nnx", "flax-linen"),
        versions="flax 0.12.8, jax 0.10.2",
        severity="low",
        source="flax/nnx/nn/normalization.py: BatchNorm.__call__, x, mean, var, scale, bias = "
               "self.promote_dtype((x, self.mean[...], self.var[...], scale, bias), dtype=self.dtype); "
               "flax/linen/normalization.py: _normalize, dtype = dtypes.canonicalize_dtype(*args, dtype=dtype) with "
               "args = [x, scale, bias]",
        upstream=None,
        properties=("mixed_output_dtype",),
    ),
]
