"""A ResNet-18 in flax.linen, layer for layer like torchvision's: 7x7/2 conv, BN, ReLU, 3x3/2 max pool, four stages
of two BasicBlocks, global average pool, Dense. PyPI's Flax ResNet package, flaxmodels 0.1.3 (2023-08), needs tqdm,
h5py, requests and regex at import for its weight downloads, so the standard architecture is written here instead.

Submodule names follow torchvision's, with '.' -> '_' and downsample.0 / downsample.1 as downsample_conv /
downsample_bn (the probe reads a linen layer's kind from its name). Padding is symmetric like torch's (explicit
pairs; Flax "SAME" pads stride-2 convolutions unevenly). The collection forwards run with momentum 0 (a clone of the
module), so the running statistics are those of the last batch.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.flax_common import as_jax, shared_jit
from bnsuite.models import CLASSES, Moves, stat_batches

_LINEN = "flax/linen/normalization.py: BatchNorm.__call__"


def _resnet18_class():
    import flax.linen as nn
    import jax.numpy as jnp

    class BasicBlock(nn.Module):
        features: int
        stride: int
        momentum: float
        eps: float

        @nn.compact
        def __call__(self, x, train: bool):
            bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                                           epsilon=self.eps, name=name)
            conv = lambda f, k, s, name: nn.Conv(f, (k, k), (s, s), padding=[(k // 2, k // 2)] * 2,
                                                 use_bias=False, name=name)
            y = nn.relu(bn("bn1")(conv(self.features, 3, self.stride, "conv1")(x)))
            y = bn("bn2")(conv(self.features, 3, 1, "conv2")(y))
            if self.stride != 1 or x.shape[-1] != self.features:
                x = bn("downsample_bn")(conv(self.features, 1, self.stride, "downsample_conv")(x))
            return nn.relu(y + x)

    class ResNet18(nn.Module):
        num_classes: int = CLASSES
        momentum: float = 0.9  # Flax convention (weight of the old value): torch's 0.1
        eps: float = 1e-5

        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Conv(64, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False, name="conv1")(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=self.eps,
                                     name="bn1")(x))
            x = nn.max_pool(x, (3, 3), (2, 2), padding=[(1, 1), (1, 1)])
            for stage, f in enumerate((64, 128, 256, 512), start=1):
                for b in range(2):
                    x = BasicBlock(f, 2 if stage > 1 and b == 0 else 1, self.momentum, self.eps,
                                   name=f"layer{stage}_{b}")(x, train)
            return nn.Dense(self.num_classes, name="fc")(jnp.mean(x, axis=(1, 2)))

    return ResNet18


def numpy_init(module, x, seed: int) -> dict:
    """Variables of module.init with linen's default initializers (Conv, Dense: kernel lecun_normal, i.e.
    variance_scaling(1, "fan_in", "truncated_normal"), bias zeros; BatchNorm: scale ones, bias zeros, mean zeros,
    var ones; flax/linen/linear.py, normalization.py, jax/_src/nn/initializers.py) drawn by NumPy from `seed`: the
    same distributions, with the shapes from an abstract init (jax.eval_shape) instead of a compiled random-number
    program per kernel shape."""
    import jax
    from flax import traverse_util

    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(seed), x, train=False))
    rng = np.random.default_rng(seed)
    out = {}
    for path, leaf in traverse_util.flatten_dict(shapes).items():
        shape, dtype = tuple(leaf.shape), leaf.dtype
        if path[-1] == "kernel":
            # truncated to +-2 standard deviations, rescaled to unit variance (initializers.py: .87962566103423978)
            z = rng.standard_normal(shape)
            while np.any(np.abs(z) > 2):
                bad = np.abs(z) > 2
                z[bad] = rng.standard_normal(int(bad.sum()))
            value = z * np.sqrt(1.0 / int(np.prod(shape[:-1]))) / .87962566103423978
        elif path[-1] in ("scale", "var"):
            value = np.ones(shape)
        else:  # bias, mean
            value = np.zeros(shape)
        out[path] = as_jax(value, dtype)
    return traverse_util.unflatten_dict(out)


class FlaxModels:
    framework = "flax"
    channels_last = True
    architectures = {"resnet18": Cited("ResNet18", "bnsuite/models/flax_models.py: ResNet18 (torchvision's layout)")}
    freeze_idioms = {
        "train_step": Cited(Moves("all", "all", "all"),
                            f"{_LINEN}: use_running_average=False with mutable=['batch_stats'] updates ra_mean/"
                            "ra_var; the optimizer updates every param"),
        "use_running_average_true": Cited(Moves("none", "all", "all"),
                                          f"{_LINEN}: use_running_average=True reads the running statistics and "
                                          "writes none; scale and bias stay in params and take the gradient"),
        "frozen_backbone": Cited(Moves("none", "none", "none"),
                                 f"{_LINEN}: use_running_average=True; optax.multi_transform with set_to_zero on "
                                 "every param but the head (optax/_src/combine.py)"),
    }

    def versions(self) -> dict:
        import flax
        import jax
        import optax

        return {"flax": flax.__version__, "jax": jax.__version__, "optax": optax.__version__}

    def build(self, arch: str, seed: int = 0, momentum: float = 0.9, eps: float = 1e-5):
        """(module, variables) after the collection forwards (one jitted training-mode apply)."""
        if arch not in self.architectures:
            raise KeyError(arch)
        module = _resnet18_class()(momentum=momentum, eps=eps)
        batches = stat_batches(seed)
        variables = numpy_init(module, batches[0][:1], seed)
        collect = shared_jit(_collect_apply, 1)
        for x in batches:
            variables = {**variables, "batch_stats": collect(module.clone(momentum=0.0), variables, x)}
        return module, variables

    def native(self, x: np.ndarray) -> np.ndarray:
        return x

    def infer(self, model, x: np.ndarray) -> np.ndarray:
        module, variables = model[0], model[1]
        return np.asarray(module.apply(variables, x, train=False), np.float64)

    def probe_target(self, model):
        return (model[0], model[1], {"train": False})

    def fan_ins(self, model) -> list[int]:
        """Terms per output of every convolution and dense kernel (all but the kernel's last axis)."""
        from flax import traverse_util

        flat = traverse_util.flatten_dict(dict(model[1]["params"]))
        return [int(np.prod(v.shape[:-1])) for k, v in flat.items() if k[-1] == "kernel"]

    def freeze_step(self, model, idiom: str, x: np.ndarray, t: np.ndarray):
        """One optax SGD step (lr 0.1, softmax cross-entropy) under `idiom`; returns the model to read afterwards."""
        module, variables = model[0], model[1]
        grads, stats = shared_jit(_grads, 2)(module, idiom == "train_step", variables, x, t)
        params = shared_jit(_sgd_step, 1)(idiom == "frozen_backbone", variables["params"], grads)
        return module, {**variables, "params": params, "batch_stats": stats}, {"train": False}


# ResNet-18 runs its collection forwards and optimizer steps jitted: one XLA program each, where op by op every
# primitive at every shape (forward, then its transpose) is a program of its own (about 300 for one step). The module
# and the mode are static arguments, so a jitted function serves every model and idiom of the process.
def _collect_apply(module, variables, x):
    """The batch_stats after one training-mode forward of `module` (a clone with momentum 0: the batch's statistics)."""
    return module.apply(variables, x, train=True, mutable=["batch_stats"])[1]["batch_stats"]


def _grads(module, train: bool, variables, x, t):
    """Gradients of the softmax cross-entropy w.r.t. params, and the batch_stats after the forward: updated in training
    mode (use_running_average=False, mutable batch_stats), untouched in inference mode."""
    import jax
    import optax

    def loss(params):
        v = {**variables, "params": params}
        if train:
            y, upd = module.apply(v, x, train=True, mutable=["batch_stats"])
        else:
            y, upd = module.apply(v, x, train=False), {"batch_stats": variables["batch_stats"]}
        return optax.softmax_cross_entropy(y, t).mean(), upd

    (_, upd), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    return grads, upd["batch_stats"]


def _sgd_step(frozen_backbone: bool, params, grads):
    """optax SGD (lr 0.1); a frozen backbone: optax.multi_transform with set_to_zero on every param but the head."""
    import optax

    if frozen_backbone:
        labels = {k: ("head" if k == "fc" else "frozen") for k in params}
        tx = optax.multi_transform({"head": optax.sgd(0.1), "frozen": optax.set_to_zero()}, labels)
    else:
        tx = optax.sgd(0.1)
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)



MODELS = FlaxModels()
