"""What flax.linen.BatchNorm and flax.nnx.BatchNorm share: the declaration skeleton and JAX device handling.

Sources: google/flax @ 18f8f311 (flax 0.12.8): flax/linen/normalization.py (LINEN), flax/nnx/nn/normalization.py (NNX).
"""

from __future__ import annotations

from adapters.base import Cited, Declaration

LINEN = "flax/linen/normalization.py"
NNX = "flax/nnx/nn/normalization.py"

FAST_VARIANCE_NOTE = (
    "use_fast_variance=True (default) computes var = max(0, E[x^2] - E[x]^2) in one pass, which loses digits when "
    "|mean| >> std (google/flax#1491); the clamp at 0 hides negative results")


def flax_declaration(src: str, framework: str, *, freeze, training_default: Cited[str],
                     batch_stats_inference: Cited[str | None]) -> Declaration:
    return Declaration(
        framework=framework,
        default_eps=Cited(1e-5, f"{src}: BatchNorm epsilon: float = 1e-5"),
        default_momentum=Cited(0.99, f"{src}: BatchNorm momentum: float = 0.99"),
        momentum_weights=Cited("old", f"{src}: ra_mean = momentum * ra_mean + (1 - momentum) * mean"),
        default_channels_last=Cited(True, f"{src}: BatchNorm axis: int = -1"),
        running_var_estimator=Cited({"default": "biased"}, f"{src}: _compute_stats, var = mean(x^2) - mean(x)^2 "
                                                           "(divides by n, no Bessel correction)"),
        normalize_estimator=Cited("biased", f"{src}: _compute_stats"),
        single_value_batch=Cited("offset", f"{src}: no batch-size check; variance 0 gives output = bias"),
        cumulative_average=Cited(False, f"{src}: momentum is a float; no cumulative-average mode"),
        batch_stats_inference=batch_stats_inference,
        training_default=training_default,
        freeze=freeze,
        notes={"fast_variance": FAST_VARIANCE_NOTE},
    )


def jax_device(kind: str):
    import jax

    if kind == "gpu":
        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        return gpus[0] if gpus else None
    return jax.devices("cpu")[0]


def gpu_reason(kind: str) -> str | None:
    if kind == "cpu":
        return None
    return None if jax_device(kind) is not None else "no GPU visible to JAX (jax.devices() has no gpu platform)"


def jax_versions() -> dict[str, str]:
    import flax
    import jax

    return {"flax": flax.__version__, "jax": jax.__version__}
