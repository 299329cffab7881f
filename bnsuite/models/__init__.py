"""Real architectures built in each framework with random weights (nothing is downloaded), at a small resolution.

One module per framework (torch_models, keras_models, flax_models); each exposes ``MODELS``, the object an adapter's
``"models"`` capability names, with one contract:

* ``architectures``: canonical name -> the framework's constructor, cited (``Cited[str]``);
* ``build(arch, seed)``: the model with seeded random weights after ``STAT_STEPS`` statistics-collection forwards in
  training mode on seeded data (so the running statistics are those of the data, not the defaults 0 and 1);
* ``infer(model, x)``: inference-mode output (float64) of an NHWC float32 batch;
* ``probe_target(model)`` and ``native(x)``: what ``bnsuite.probe.find_batch_dependence`` takes, and the input in the
  model's own layout;
* ``freeze_idioms``: idiom -> ``Cited[Moves]``, what one real optimizer step moves under that idiom;
* ``freeze_step(model, idiom, x, t)``: one real optimizer step under the idiom; returns the model to read afterwards.

The shared pieces below (input size, seeded data, what "moved" means) live here so every framework uses the same.
"""

from __future__ import annotations

import dataclasses

import numpy as np

IMAGE = 32  # height and width of every input: the smallest every architecture accepts (MobileNetV3 needs 32)
CLASSES = 10
STAT_STEPS = 3  # statistics-collection forwards in training mode
STAT_BATCH = 16
# Canonical architecture names (one spelling across frameworks; each framework maps them to its constructor).
ARCHITECTURES = ("resnet18", "resnet50", "densenet121", "mobilenet_v2", "mobilenet_v3", "efficientnet_b0")


@dataclasses.dataclass(frozen=True)
class Moves:
    """What one optimizer step under a freeze idiom moves, per BatchNorm layer: "all" or "none" of the layers."""

    stats: str
    scale: str
    offset: str


def images(n: int, seed: int) -> np.ndarray:
    """n seeded NHWC float32 images with per-channel offsets (so BatchNorm has a mean to remove)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, IMAGE, IMAGE, 3)) + rng.uniform(-1, 1, (1, 1, 1, 3))
    return x.astype(np.float32)


def targets(n: int, seed: int) -> np.ndarray:
    """n seeded one-hot float32 targets over CLASSES."""
    rng = np.random.default_rng(seed)
    return np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, n)]


def stat_batches(seed: int) -> list[np.ndarray]:
    return [images(STAT_BATCH, seed * 1000 + 17 + i) for i in range(STAT_STEPS)]


def moved(before, after) -> dict:
    """Per kind (stats, scale, offset): how many of the BatchNorm layers changed any value between two reads
    (lists of bnsuite.audit.read.BNInfo, same order), and how many there are."""
    def changed(a, b):
        return a is not None and b is not None and not np.array_equal(a, b)

    n = len(before)
    return {"layers": n,
            "stats": sum(changed(b.mean, a.mean) or changed(b.var, a.var) for b, a in zip(before, after)),
            "scale": sum(changed(b.scale, a.scale) for b, a in zip(before, after)),
            "offset": sum(changed(b.offset, a.offset) for b, a in zip(before, after))}


def expected_count(word: str, n: int) -> int:
    return {"all": n, "none": 0}[word]
