"""The one interface every BatchNorm adapter implements, and the plain data that crosses it.

Everything that crosses this boundary is framework-neutral: specs and declarations are dataclasses, tensors are NumPy
arrays, state is float64. Framework handles stay inside the adapter.

Canonical momentum
------------------
``Spec.momentum`` is the weight of the NEW batch statistic (PyTorch's convention)::

    running <- (1 - momentum) * running + momentum * batch_statistic

``momentum=None`` asks for the cumulative moving average (running = plain mean of every batch seen so far). Each
adapter converts the canonical value to its framework's own convention (Keras and Flax weight the OLD value, so they
receive ``1 - momentum``); the declaration says which convention the framework uses.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Generic, Mapping, TypeVar

import numpy as np

T = TypeVar("T")

class Unsupported(Exception):
    """The adapter cannot express this request on its framework (the message says why); suites skip the case."""


@dataclasses.dataclass(frozen=True)
class Cited(Generic[T]):
    """A declared value and where it comes from (a source file and line, or an upstream issue)."""

    value: T
    source: str


def installed_version(dist: str) -> str | None:
    """The installed release of a distribution ("keras", "flax", ...), or None where it is not installed."""
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    """"3.15.1" -> (3, 15, 1); local and pre-release tails ("2.13.0+cpu", "0.12.4rc1") are cut at the first non-digit."""
    parts = []
    for piece in version.split(".")[:4]:
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def in_range(version: str, spec: str) -> bool:
    """Whether `version` lies in `spec`: "*" or comma-separated clauses "<3.15", ">=0.12.4", "==2.16.0"."""
    if spec.strip() == "*":
        return True
    ops = {"<": tuple.__lt__, "<=": tuple.__le__, ">": tuple.__gt__, ">=": tuple.__ge__, "==": tuple.__eq__}
    v = _release(version)
    for clause in spec.split(","):
        clause = clause.strip()
        op = next(o for o in ("<=", ">=", "==", "<", ">") if clause.startswith(o))
        bound = _release(clause[len(op):].strip())
        width = max(len(v), len(bound))
        if not ops[op](v + (0,) * (width - len(v)), bound + (0,) * (width - len(bound))):
            return False
    return True


def by_version(dist: str, *ranges: "tuple[str, Cited[T]]") -> "Cited[T]":
    """A declared value that differs by release: `ranges` are (range, Cited) pairs, e.g.
    ``by_version("keras", ("<3.15", Cited("running-mean", src_old)), (">=3.15", Cited("batch", src_new)))``.
    Returns the Cited of the first range holding the installed release, its source prefixed with that range, so a
    results file (and the drift view) says which declaration applied. Where `dist` is not installed (a declaration read
    in another framework's process, e.g. by the porting suite) the LAST range, the newest releases', applies. Raises
    LookupError where no range holds an installed release: an undeclared release is a gap, not a default.
    """
    version = installed_version(dist)
    if version is None:
        spec, cited = ranges[-1]
        return Cited(cited.value, f"[{dist} {spec}; not installed here] {cited.source}")
    for spec, cited in ranges:
        if in_range(version, spec):
            return Cited(cited.value, f"[{dist} {spec}] {cited.source}")
    raise LookupError(f"no declared value for {dist} {version}: ranges {[spec for spec, _ in ranges]}")


@dataclasses.dataclass(frozen=True)
class FreezeFacts:
    """What one freezing idiom does, as three facts (checked by suites/test_freeze.py and test_finetune.py)."""

    normalizes_with: str  # "batch" or "running" statistics in the forward pass
    running_stats_update: bool  # do the running statistics change during the step
    params_update: bool  # do scale and offset change after an optimizer step
    error: str | None = None  # an exception class name if the idiom raises instead


@dataclasses.dataclass(frozen=True)
class FreezeIdiom:
    """How an adapter runs one freeze idiom: `how` is the framework's recipe, read alike by its lone layer
    (frozen_step) and its networks; `network` is None where the networks run the idiom too, else why they cannot
    (those network cases skip with it)."""

    how: Any
    network: str | None = None


@dataclasses.dataclass(frozen=True)
class Probe:
    """A declared framework trap outside the layer's numerics (an import switch, a setter that raises, ...).

    `run` returns the observed value as a short string; the suite compares it with `declared.value`.
    """

    property: str
    declared: "Cited[str]"
    run: Callable[[], str]


@dataclasses.dataclass(frozen=True)
class DtypeRule:
    """What a layer built in one input dtype does (checked by suites/test_precision.py). Dtype names as NumPy
    spells them.

    `supported` is "yes" or "error:<ExceptionClass>" (the framework raises when the layer is built or first run;
    the other fields are then None). `stats` is the dtype the batch mean/variance are computed in, `state` the dtype
    the running statistics (and scale/offset) are stored in when built, `state_after_training` the dtype the running
    statistics have after one training step (None: unchanged).
    """

    supported: str = "yes"
    output: str | None = None
    stats: str | None = None
    state: str | None = None
    state_after_training: str | None = None
    hyperparameters: str | None = None  # the dtype eps and momentum reach the kernel in (None: the layer's own)


@dataclasses.dataclass(frozen=True)
class MixedRule:
    """What one mixed-precision idiom does (adapters/mixed_precision/ names the idioms); dtype names as NumPy
    spells them. `supported` is "yes" or "error:<ExceptionClass>". `output` is the dtype of the layer's output, `stats`
    the dtype the batch mean/variance are computed in, `params` the dtype scale/offset are stored in, `state` the dtype
    the running statistics are stored in when built and `state_after_training` after one training step (None:
    unchanged). `running_var_finite`: the running variance stays finite after a training step on activations whose
    variance exceeds the float16 range (65504). `running_stats_update`: False where a step leaves them as loaded.
    `mean_sum_overflows`: the batch mean is a sum held in the 16-bit statistics dtype, then divided: a channel whose
    sum exceeds float16's range has an inf mean (and a NaN output) though its mean is representable.
    """

    supported: str = "yes"
    output: str | None = None
    stats: str | None = None
    params: str | None = None
    state: str | None = None
    state_after_training: str | None = None
    running_var_finite: bool = True
    running_stats_update: bool = True
    mean_sum_overflows: bool = False


@dataclasses.dataclass
class MixedRun:
    """What one training step and one inference step of a mixed-precision idiom gave (float64 arrays)."""

    output: np.ndarray  # training-mode output
    output_dtype: str
    inference_output: np.ndarray  # inference-mode output on the same input, after the training step
    state: State  # after the training step
    dtypes_built: dict  # scale/offset/mean/var -> dtype name when built
    dtypes_after: dict  # the same after the training step
    code_path: str = "default"
    snippet: str = ""  # a short copy-paste reproduction of the idiom


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What a framework's BatchNorm does, as data. Every field cites its source."""

    framework: str  # human name and version, e.g. "torch 2.13.0"
    default_eps: Cited[float]
    default_momentum: Cited[float]  # in the framework's OWN convention
    momentum_weights: Cited[str]  # which term the framework's momentum weights: "new" or "old"
    default_channels_last: Cited[bool]
    # Estimator of the variance that feeds the running variance, per code path (see Adapter.code_path).
    running_var_estimator: Cited[Mapping[str, str]]
    # Estimator used to normalize in training mode (every framework: biased).
    normalize_estimator: Cited[str]
    # Training forward on ONE value per channel: "error:<ExceptionClass>", "offset" (variance 0) or "input unchanged".
    single_value_batch: Cited[str]
    cumulative_average: Cited[bool]  # momentum=None (cumulative moving average) is supported
    # How inference can normalize with batch statistics ("track_running_stats=False", ...) or None.
    batch_stats_inference: Cited[str | None]
    # What `training` left out of the call means: "inference", "training" or "module-mode".
    training_default: Cited[str]
    # How the batch variance is computed: "two-pass" (mean((x - mean)^2)), "one-pass-clamped"
    # (max(0, E[x^2] - E[x]^2)) or "one-pass-unclamped" (E[x^2] - E[x]^2, may go negative). Decides the error bound
    # on numerically hard inputs (suites/test_hard_inputs.py).
    variance_algorithm: Cited[str] = Cited("one-pass-unclamped", "not declared: the weakest assumption")
    single_value_batch_stats_inference: Cited[str] | None = None  # the same, batch statistics at inference (None: same)
    # Freeze idiom name -> the three facts; also the list of idioms the adapter and its networks implement.
    freeze: Mapping[str, Cited[FreezeFacts]] = dataclasses.field(default_factory=dict)
    # Free-form findings that explain a surprise: property -> explanation with source.
    notes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Input dtype ("float16", "bfloat16", "float64", ...) -> what the layer does in it (suites/test_precision.py). A key
    # "<dtype>:<code_path>" overrides "<dtype>" for that code path. Empty where not declared yet.
    precision: Mapping[str, Cited[DtypeRule]] = dataclasses.field(default_factory=dict)
    # Mixed-precision idiom ("defaults-float16", "autocast-bfloat16", "policy-float16", ...; see
    # adapters/mixed_precision/) -> what the layer does under it. Empty where not declared.
    mixed_precision: Mapping[str, Cited[MixedRule]] = dataclasses.field(default_factory=dict)

    def precision_for(self, dtype: str, code_path: str = "default") -> "Cited[DtypeRule] | None":
        return self.precision.get(f"{dtype}:{code_path}", self.precision.get(dtype))

    def estimator_for(self, code_path: str) -> str:
        table = self.running_var_estimator.value
        return table.get(code_path, table.get("default", "unknown"))


@dataclasses.dataclass(frozen=True)
class Spec:
    """A framework-neutral BatchNorm layer description."""

    num_features: int = 3
    rank: int = 4  # 2, 3, 4 or 5 (N, C, spatial...)
    channels_last: bool = False
    eps: float = 1e-3
    momentum: float | None = 0.1  # canonical convention, see module docstring; None = cumulative average
    affine: bool = True
    track_running_stats: bool = True
    dtype: str = "float32"
    device: str = "cpu"
    use_defaults: bool = False  # build with the framework's own default eps/momentum/axis, ignoring the above

    @property
    def channel_axis(self) -> int:
        return self.rank - 1 if self.channels_last else 1

    @property
    def layout(self) -> str:
        """"NC", "NCL"/"NLC", "NCHW"/"NHWC" or "NCDHW"/"NDHWC"."""
        spatial = {2: "", 3: "L", 4: "HW", 5: "DHW"}[self.rank]
        if self.rank == 2:
            return "NC"
        return f"N{spatial}C" if self.channels_last else f"NC{spatial}"

    def replace(self, **changes: Any) -> "Spec":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class State:
    """Layer state as float64 NumPy arrays of shape (C,). Missing pieces are None."""

    scale: np.ndarray | None
    offset: np.ndarray | None
    mean: np.ndarray | None
    var: np.ndarray | None

    def copy(self) -> "State":
        return State(*(None if a is None else np.array(a, dtype=np.float64) for a in dataclasses.astuple(self)))


@dataclasses.dataclass
class Grads:
    """Gradients of sum(y * dy): input, scale, offset (float64 NumPy)."""

    dx: np.ndarray
    dscale: np.ndarray | None
    doffset: np.ndarray | None


def dtype_name(dtype: Any) -> str:
    """A framework dtype (torch.dtype, tf.DType, NumPy/JAX dtype, Keras string) as NumPy spells it: "float16"."""
    if isinstance(dtype, str):
        return dtype
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):
        name = str(dtype)
    return name.replace("torch.", "")


class BatchNormAdapter(ABC):
    """One BatchNorm layer of one framework, built from a Spec.

    Subclasses set ``id``, ``requires`` (importable module names) and ``declaration`` (or implement ``declare``),
    and implement the abstract methods. Framework imports happen inside methods, never at module import, so that discovery stays cheap and a
    missing framework becomes a skip.
    """

    id: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    # Environment this adapter needs set BEFORE its framework is imported (the runner starts its process with it).
    process_env: ClassVar[Mapping[str, str]] = {}
    # Markers for selection with -m (framework families).
    families: ClassVar[tuple[str, ...]] = ()
    # What the adapter can do beyond the four core methods: capability name -> "package.module:attr", resolved by
    # bnsuite/adapters/capabilities.py (a subclass extends it: {**Parent.capabilities, "name": "..."}).
    capabilities: ClassVar[Mapping[str, str]] = {}
    # The freeze idioms frozen_step and the adapter's networks implement, one table per framework: exactly the idioms
    # the declaration names (meta_tests/test_freeze_idioms.py); a declared idiom that cannot run fails its cases.
    freeze_idioms: ClassVar[Mapping[str, FreezeIdiom]] = {}
    # What the layer does, as data (returned by declare()); None where declare() computes it.
    declaration: ClassVar[Declaration | None] = None
    # dtype name of the tensor the last forward() returned, before conversion to float64 (None: not recorded).
    last_output_dtype: str | None = None

    # -- class level: availability, devices, declaration ------------------------------------------------------------
    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when the adapter can run in this process, else one line saying why not."""
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if missing:
            return f"not installed: {', '.join(missing)}"
        for key, want in cls.process_env.items():
            have = os.environ.get(key)
            if have != want:
                return (f"needs {key}={want} set before the framework is imported (this process has "
                        f"{key}={have!r}); run `tox -e {cls.id}`")
        return None

    @classmethod
    def device_unavailable_reason(cls, device: str) -> str | None:
        """None when `device` ("cpu", "gpu") is visible to the framework, else why not."""
        if device == "cpu":
            return None
        return f"{cls.id}: no {device} visible"

    @classmethod
    def declare(cls) -> Declaration:
        """The declared semantics: the class's ``declaration``; an adapter whose declaration depends on the installed
        framework version computes it here instead."""
        if cls.declaration is None:
            raise NotImplementedError(f"{cls.id}: the adapter sets no `declaration` and does not implement declare()")
        return cls.declaration

    @classmethod
    def freeze_recipe(cls, idiom: str) -> Any:
        """The recipe of `idiom` in the adapter's freeze_idioms; Unsupported where the table lacks it."""
        if idiom not in cls.freeze_idioms:
            raise Unsupported(f"{cls.id}: freeze idiom {idiom!r} is not in the adapter's freeze_idioms")
        return cls.freeze_idioms[idiom].how

    @classmethod
    def probes(cls) -> list[Probe]:
        """Declared traps of the framework, checked by suites/test_framework_traps.py."""
        return []

    @classmethod
    def versions(cls) -> dict[str, str]:
        """Versions of the framework packages this adapter runs on."""
        return {}

    @classmethod
    def supported_dtypes(cls) -> tuple[str, ...]:
        return ("float32",)

    # -- instance level: one layer ------------------------------------------------------------------------------------
    def __init__(self, spec: Spec):
        self.spec = spec

    @abstractmethod
    def forward(self, x: np.ndarray, training: bool | None) -> np.ndarray:
        """Run the layer. training=None leaves the argument out (the framework's default)."""

    @abstractmethod
    def get_state(self) -> State:
        ...

    @abstractmethod
    def set_state(self, state: State) -> None:
        ...

    def hyperparameters(self) -> dict[str, Any]:
        """eps, momentum (framework's own convention) and channel axis as the built layer reports them."""
        raise Unsupported(f"{self.id}: hyperparameters() not implemented")

    def code_path(self, x_shape: tuple[int, ...]) -> str:
        """Name of the implementation path taken for this input (keys of running_var_estimator)."""
        return "default"

    def backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> Grads:
        """Gradients of sum(y * dy) w.r.t. input, scale and offset; dx in the layout of x.

        training=True differentiates through the batch statistics. The layer's state afterwards is the state before
        (a framework that updates running statistics during the step has them restored).
        """
        raise Unsupported(f"{self.id}: backward not implemented")

    def state_dtypes(self) -> dict[str, str | None]:
        """dtype names of the stored scale, offset, running mean and running variance (None where absent)."""
        raise Unsupported(f"{self.id}: state_dtypes() not implemented")

    # -- edge inputs (suites/test_edge_inputs.py) ----------------------------------------------------------------------
    def forward_masked(self, x: np.ndarray, mask: np.ndarray, training: bool) -> np.ndarray:
        """Run the layer with a mask of the positions that count toward the batch statistics.

        `mask` is boolean with the shape of x WITHOUT the channel axis (one flag per position, as a user's padding
        mask is); the adapter passes it the way the framework documents its mask argument.
        """
        raise Unsupported(f"{self.id}: no mask argument (forward_masked not implemented)")

    def rebuild_with_virtual_batch_size(self, virtual_batch_size: int) -> None:
        """Replace the layer by a fresh one (initial state) built with the spec and ghost batches of this size."""
        raise Unsupported(f"{self.id}: no virtual_batch_size option (rebuild_with_virtual_batch_size not implemented)")

    def rebuild_with_axes(self, axes: tuple[int, ...], x_shape: tuple[int, ...]) -> None:
        """Replace the layer by a fresh one (initial state) whose statistics are per element of SEVERAL axes (in the
        spec's layout, for inputs of shape x_shape); get_state then returns arrays over those axes, in their order."""
        raise Unsupported(f"{self.id}: no BatchNorm over several axes (rebuild_with_axes not implemented)")

    def forward_constructed_mode(self, x: np.ndarray, constructed: bool, call: bool | None) -> np.ndarray:
        """A fresh layer built with use_running_average=`constructed` at construction, called on x with
        use_running_average=`call` (None: left out of the call). For frameworks with such a constructor argument."""
        raise Unsupported(f"{self.id}: no use_running_average at construction (forward_constructed_mode not "
                          "implemented)")

    # -- freeze idioms (suites/test_freeze.py) -------------------------------------------------------------------------
    def frozen_step(self, idiom: str, x: np.ndarray, dy: np.ndarray, lr: float) -> np.ndarray:
        """Freeze the layer with `idiom`, run one forward and one optimizer (SGD, lr) step on loss = sum(y * dy).

        Returns the forward output. The suite reads the state before and after.
        """
        raise Unsupported(f"{self.id}: freeze idiom {idiom!r} not implemented")

    def set_trainable(self, trainable: bool) -> None:
        """Set the layer's own `trainable` flag (Keras-API layers), leaving the call's `training` argument alone."""
        raise Unsupported(f"{self.id}: the layer has no trainable flag")

    def snippet(self) -> str:
        """A short copy-paste reproduction of the layer this adapter built."""
        return f"# build {self.id} with {self.spec}"
