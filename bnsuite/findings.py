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

import argparse
import dataclasses
import os
import sys

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
    # The adapter whose process environment (KERAS_BACKEND, TF_USE_LEGACY_KERAS) the reproduction runs in; "" means
    # the first of `adapters`.
    reproduce_with: str = ""
    # Test-id fragments that narrow which checks of `properties` demonstrate it (e.g. a freeze idiom); empty: every
    # check of those properties on those adapters.
    where: tuple[str, ...] = ()

    @property
    def reproduction(self) -> str:
        """The reproduction's path, relative to the root of the checkout."""
        return f"findings/{self.name}.py"

    @property
    def upstream_report(self) -> str:
        """Where the text of an upstream report lives for a finding not reported upstream yet."""
        return f"findings/{self.name}.upstream.md"


FINDINGS: list[Finding] = [
    # existing
    Finding(
        name="tf_fused_running_variance_unbiased",
        title="TensorFlow's fused BatchNorm kernel stores the UNBIASED batch variance in the running variance while "
              "the non-fused path (rank 2/3 inputs, Keras 3) stores the biased one, so the same layer class keeps "
              "different running variances depending on the input rank.",
        area="running-stats",
        adapters=("tf_keras", "tf1-keras", "tf1-graph"),
        versions="tf_keras / tensorflow 2.21.0",
        severity="medium",
        source="tf_keras/src/layers/normalization/batch_normalization.py: _fused_batch_norm uses "
               "tf.compat.v1.nn.fused_batch_norm, which applies Bessel's correction to the variance it returns; "
               "_calculate_mean_and_var (non-fused) uses tf.nn.moments (biased)",
        upstream="tensorflow/tensorflow#55545 (closed as stalled, not fixed)",
        properties=("running_var_estimator", "train_eval_gap"),
    ),
    Finding(
        name="keras3_functional_fit_overrides_training_false",
        title="Keras 3 overrides `training=False` baked into a functional model during fit(): `bn(x, training=False)` "
              "and the transfer-learning idiom `base_model(inputs, training=False)` train anyway and move the "
              "running statistics.",
        area="freeze",
        adapters=("keras-tensorflow", "keras-jax", "keras-torch"),
        versions="keras 3.15.1 (all backends)",
        severity="high",
        source="keras/src/models/functional.py: operation_fn writes the outer call's context arguments (fit's "
               "training=True) over each layer's recorded kwargs; a subclassed model and tf_keras keep training=False",
        upstream="keras-team/keras#20285 (closed as type:support with a guide edit only; the behaviour is unchanged)",
        properties=("freeze_normalizes_with", "freeze_running_stats_update", "finetune_bn_running_stats_update"),
        where=("functional_training_false_fit",),
    ),
    Finding(
        name="tf1_trainable_false_uses_batch_statistics",
        title="`trainable=False` means opposite things in TensorFlow's TF1 and TF2 BatchNorm layers: the TF2 layer "
              "then runs in inference mode, the TF1 layer keeps normalizing with batch statistics.",
        area="freeze",
        adapters=("tf1-keras", "tf1-graph"),
        versions="tensorflow 2.21.0 with tf_keras 2.21.0 (TF_USE_LEGACY_KERAS=1)",
        severity="medium",
        source="tf_keras/src/layers/normalization/batch_normalization.py: BatchNormalizationBase._get_training_value "
               "forces training=False for a non-trainable layer only `if self._USE_V2_BEHAVIOR` (False in the V1 "
               "class); documented in the TF2 layer's docstring",
        upstream=None,
        properties=("tf1_vs_tf2_normalizes_with", "freeze_normalizes_with"),
        where=("trainable_false",),
    ),
    Finding(
        name="tf1_graph_frozen_layer_adds_no_update_ops",
        title="In a TF1 graph, a BatchNorm layer frozen with `trainable=False` adds no ops to UPDATE_OPS yet still "
              "normalizes with batch statistics in training, so its running statistics silently never move.",
        area="freeze",
        adapters=("tf1-graph",),
        versions="tensorflow 2.21.0 with tf_keras 2.21.0 (TF_USE_LEGACY_KERAS=1)",
        severity="medium",
        source="tf_keras/src/engine/base_layer_v1.py: Layer.updates returns [] for `not self.trainable and not "
               "self.stateful`; tf_keras/src/legacy_tf_layers/base.py adds only those updates to UPDATE_OPS",
        upstream=None,
        properties=("tf1_vs_tf2_running_stats_update", "freeze_running_stats_update"),
        where=("trainable_false",),
    ),
    Finding(
        name="torch_freeze_idioms_update_running_stats",
        title="In PyTorch, `requires_grad_(False)` and `torch.no_grad()` do not freeze BatchNorm: in train mode its "
              "running statistics still move; only `module.eval()` stops them.",
        area="freeze",
        adapters=("torch",),
        versions="torch 2.13.0",
        severity="high",
        source="torch/nn/modules/batchnorm.py: _BatchNorm.forward decides on self.training (and "
               "track_running_stats) only; requires_grad and grad mode affect autograd, not the buffer update",
        upstream="pytorch/pytorch#86590 (open feature request: freeze running stats with requires_grad)",
        properties=("freeze_running_stats_update", "finetune_bn_running_stats_update"),
        where=("-requires_grad_false", "-no_grad"),
    ),
    Finding(
        name="torch_no_running_stats_batch1_eval_raises",
        title="PyTorch's BatchNorm with `track_running_stats=False` raises ValueError at batch size 1 even in "
              "eval() mode, where the other frameworks' batch-statistics inference returns the offset.",
        area="batch-size",
        adapters=("torch",),
        versions="torch 2.13.0",
        severity="low",
        source="torch/nn/functional.py: batch_norm calls _verify_batch_size whenever it uses batch statistics, "
               "and without running statistics eval() uses batch statistics",
        upstream="pytorch/pytorch#156051 (open)",
        properties=("batch_stats_inference_single_sample",),
    ),
    Finding(
        name="keras_torch_one_pass_negative_running_variance",
        title="Keras 3 on the torch backend computes the batch variance in one unclamped pass, E[x^2] - E[x]^2: "
              "inputs with a large mean over a small spread give a negative running variance and NaN outputs.",
        area="hard-inputs",
        adapters=("keras-torch",),
        versions="keras 3.15.1 (torch backend), torch 2.13.0",
        severity="high",
        source="keras/src/backend/torch/nn.py: moments() returns mean(square(x)) - square(mean) with no clamp; "
               "the tensorflow and jax backends center first (keras-team/keras#18795 fixed those two only)",
        upstream=None,
        properties=("hard_input_negative_variance", "hard_input_training_output"),
    ),
    Finding(
        name="flax_fast_variance_loses_precision",
        title="Flax's BatchNorm defaults to a one-pass variance (use_fast_variance=True): with a mean 10^4 times the "
              "spread, float32 cancellation makes the normalized output wrong by orders of magnitude.",
        area="hard-inputs",
        adapters=("flax-linen", "flax-nnx"),
        versions="flax 0.12.8, jax 0.10.2",
        severity="medium",
        source="flax/linen/normalization.py: _compute_stats(use_fast_variance=True) computes mean2 - square(mean), "
               "clamped at 0 (flax/nnx/nn/normalization.py shares it); use_fast_variance=False is two-pass",
        upstream=None,
        properties=("hard_input_training_output",),
    ),
    Finding(
        name="keras3_float64_layer_computes_in_float32",
        title="Keras 3 on the torch and jax backends computes a float64 BatchNormalization in float32, so a float64 "
              "model carries float32 rounding errors (about 1e-7).",
        area="precision",
        adapters=("keras-torch", "keras-jax"),
        versions="keras 3.15.1 (torch and jax backends)",
        severity="medium",
        source="keras/src/backend/common/dtypes.py: result_type maps float64 to float32 on every backend but "
               "tensorflow (BIT64_TO_BIT32_DTYPE); BatchNormalization.call computes in result_type(input, float32)",
        upstream="keras-team/keras#23704 (open; the same float64 -> float32 mapping, reported on Dense)",
        properties=("precision_output_dtype", "precision_state_dtype", "precision_training_output"),
    ),
    Finding(
        name="flax_linen_float64_batch_stats_start_float32",
        title="flax.linen's float64 BatchNorm initializes its batch_stats in float32; they turn float64 only after "
              "the first training step replaces them.",
        area="precision",
        adapters=("flax-linen",),
        versions="flax 0.12.8, jax 0.10.2 (jax_enable_x64)",
        severity="low",
        source="flax/linen/normalization.py: BatchNorm.__call__ creates ra_mean / ra_var with jnp.zeros / jnp.ones "
               "and no dtype (float32), then assigns momentum * ra + (1 - momentum) * stat, which promotes",
        upstream=None,
        properties=("precision_state_dtype", "precision_state_dtype_after_training"),
    ),
    Finding(
        name="keras_torch_device_scope_blocks_freeze",
        title="Keras 3 on the torch backend: a layer built inside `keras.device(...)` cannot be frozen; "
              "`layer.trainable = False` raises RuntimeError about non-leaf tensors.",
        area="traps",
        adapters=("keras-torch",),
        versions="keras 3.15.1 (torch backend), torch 2.13.0",
        severity="medium",
        source="keras/src/backend/torch/core.py: inside a device scope new variables are moved with .to(device), "
               "which makes them non-leaf; the trainable setter then calls requires_grad_(False), which torch refuses",
        upstream=None,
        properties=("keras_device_scope_then_freeze",),
    ),
    Finding(
        name="keras_torch_module_eval_ignored",
        title="Keras 3 on the torch backend: a Keras layer is a torch.nn.Module, but `module.eval()` does not freeze "
              "its BatchNormalization; the layer follows only its `training` argument and keeps updating.",
        area="freeze",
        adapters=("keras-torch",),
        versions="keras 3.15.1 (torch backend), torch 2.13.0",
        severity="medium",
        source="keras/src/backend/torch/layer.py: TorchLayer never reads nn.Module.training; keras/src/layers/"
               "layer.py resolves `training` from the call arguments only",
        upstream=None,
        properties=("freeze_normalizes_with", "freeze_running_stats_update", "finetune_bn_running_stats_update"),
        where=("torch_module_eval",),
    ),
    Finding(
        name="default_eps_and_momentum_differ",
        title="PyTorch and Keras disagree on BatchNorm defaults (eps 1e-5 vs 1e-3; momentum 0.1 weighting the new "
              "statistic vs 0.99 weighting the old one), so a port that keeps the target's defaults changes every "
              "output and running statistic.",
        area="porting",
        adapters=("torch", "keras-tensorflow", "keras-jax", "keras-torch", "tf_keras", "tf1-keras", "tf1-graph",
                  "flax-linen", "flax-nnx"),
        versions="torch 2.13.0, keras 3.15.1, tf_keras 2.21.0, flax 0.12.8",
        severity="low",
        source="torch/nn/modules/batchnorm.py: _NormBase.__init__(eps=1e-5, momentum=0.1); keras/src/layers/"
               "normalization/batch_normalization.py: __init__(momentum=0.99, epsilon=1e-3); flax/linen/"
               "normalization.py: BatchNorm(momentum=0.99, epsilon=1e-5). Documented in each; a divergence between "
               "frameworks, not a bug",
        upstream=None,
        properties=("default_eps", "default_momentum", "momentum_weights", "naive_port_inference_output"),
        reproduce_with="keras-torch",
    ),
]


# ---- machinery (standard library only) ------------------------------------------------------------------------------

README_BEGIN = "<!-- findings:begin (generated by python3 -m bnsuite.findings --readme; do not edit) -->"
README_END = "<!-- findings:end -->"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demonstrated_by(prop: str, adapter: str, test: str = "") -> list[Finding]:
    """The findings a check of `prop` on `adapter` (in test `test`) demonstrates."""
    return [f for f in FINDINGS if prop in f.properties and adapter in f.adapters
            and (not f.where or any(w in test for w in f.where))]


def failure_note(prop: str, adapter: str, test: str = "") -> str:
    """What a failing check adds to its message when it demonstrates findings: the framework may have changed."""
    hits = demonstrated_by(prop, adapter, test)
    if not hits:
        return ""
    names = ", ".join(f.name for f in hits)
    return (f" [demonstrates finding {names}: if the framework fixed it, run {hits[0].reproduction} and update the "
            "finding and its declaration]")


def records() -> list[dict]:
    """The findings as results-file records (kind "finding"), so that reports read them from results files."""
    return [{**dataclasses.asdict(f), "reproduction": f.reproduction,
             "upstream_report": None if f.upstream else f.upstream_report} for f in FINDINGS]


def validate() -> list[str]:
    """One line per malformed finding (the meta tests require none)."""
    problems, seen = [], set()
    for f in FINDINGS:
        if f.name in seen:
            problems.append(f"{f.name}: declared twice")
        seen.add(f.name)
        if not f.name.isidentifier() or f.name != f.name.lower():
            problems.append(f"{f.name}: name must be snake_case")
        if f.severity not in SEVERITIES:
            problems.append(f"{f.name}: severity {f.severity!r} not in {SEVERITIES}")
        for field in ("title", "area", "versions", "source"):
            if not getattr(f, field):
                problems.append(f"{f.name}: empty {field}")
        if not f.adapters or not f.properties:
            problems.append(f"{f.name}: needs adapters and properties")
        if f.reproduce_with and f.reproduce_with not in f.adapters:
            problems.append(f"{f.name}: reproduce_with {f.reproduce_with!r} is not one of its adapters")
    return problems


def readme_section() -> str:
    """The README's findings section, between its two markers."""
    lines = [README_BEGIN, "",
             f"{len(FINDINGS)} findings, {sum(f.upstream is not None for f in FINDINGS)} with an upstream issue. Each "
             "is declared once in `bnsuite/findings.py`, demonstrated by checks that fail naming it if the framework "
             "changes, and reproduced standalone by `findings/<name>.py` (exit 1 while the behaviour is present, 0 "
             "once it is gone; `BNSUITE_REPRODUCTIONS=1 python -m pytest meta_tests/test_findings.py` runs them all). "
             "Findings not yet reported upstream have the text of a report in `findings/<name>.upstream.md`.", ""]
    order = {s: i for i, s in enumerate(SEVERITIES)}
    for f in sorted(FINDINGS, key=lambda f: order.get(f.severity, 9)):
        upstream = f.upstream or f"not reported upstream (draft: `{f.upstream_report}`)"
        lines += [f"- **{f.title}** ({f.severity}; {', '.join(f'`{a}`' for a in f.adapters)}; {f.versions})",
                  f"  Source: {f.source}. Upstream: {upstream}. Reproduce: `python {f.reproduction}`."]
    lines += ["", README_END]
    return "\n".join(lines)


def rewrite_readme(text: str) -> str:
    """README text with the findings section replaced; ValueError when the markers are missing."""
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError("README.md has no findings markers")
    return text[:start] + readme_section() + text[end + len(README_END):]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bnsuite.findings", description="The declared findings.")
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's findings section")
    ap.add_argument("--check", action="store_true", help="with --readme: exit 1 if README.md is out of date")
    args = ap.parse_args(argv)
    problems = validate()
    for p in problems:
        print(f"findings: {p}", file=sys.stderr)
    if problems:
        return 2
    if not args.readme:
        for f in FINDINGS:
            print(f"{f.severity:6s} {f.name:50s} {f.upstream or 'not reported upstream'}")
        return 0
    path = os.path.join(ROOT, "README.md")
    try:
        with open(path, encoding="utf-8") as fh:
            old = fh.read()
        new = rewrite_readme(old)
    except (OSError, ValueError) as e:
        print(f"findings: {path}: {e}", file=sys.stderr)
        return 2
    if args.check:
        if new != old:
            print("findings: README.md's findings section is out of date; run python3 -m bnsuite.findings --readme",
                  file=sys.stderr)
            return 1
        return 0
    if new != old:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(new)
    print(f"README.md: {len(FINDINGS)} findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
