"""The blocks oracle (adapters/blocks/reference.py) against hand-computed cases, and the blocks' seam (the "blocks"
capability)."""

import itertools

import numpy as np
import pytest

from bnsuite.adapters import capabilities, registry
from bnsuite.adapters.base import Unsupported
from bnsuite.adapters.blocks import BLOCKS, BlockSpec
from bnsuite.adapters.blocks import reference as bref


def test_li_variance_shift_by_hand():
    # c = 0: Delta = q (the paper's zero-mean case); c = 1, v = 1, q = 1/2: Var_train = 2 + 1 = 3, Delta = 1/3
    assert bref.li_variance_shift(np.array(0.0), np.array(2.0), 0.7) == pytest.approx(0.7)
    assert bref.li_variance_shift(np.array(1.0), np.array(1.0), 0.5) == pytest.approx(1 / 3)
    assert bref.li_variance_shift(np.array(3.0), np.array(1.0), 1.0) == pytest.approx(1.0)  # no dropout, no shift


def test_dropout_sample_variance_is_the_exact_mask_average():
    """E[S] over all 2^n masks of n = 4 values, enumerated by hand, equals the closed form; so does Var[S] within
    the delta method's O(1/n) (checked loosely here, exactly in expectation)."""
    z = np.array([[1.0], [2.0], [-1.0], [4.0]])
    q = 0.6
    vals, probs = [], []
    for mask in itertools.product([0, 1], repeat=4):
        a = np.array(mask, float)[:, None]
        y = a * z / q
        vals.append(y.var(axis=0)[0])
        probs.append(np.prod([q if m else 1 - q for m in mask]))
    vals, probs = np.array(vals), np.array(probs)
    expected, se = bref.dropout_sample_variance(z, q)
    assert expected[0] == pytest.approx(float(np.sum(vals * probs)), rel=1e-12)
    true_se = float(np.sqrt(np.sum(probs * (vals - np.sum(vals * probs)) ** 2)))
    assert se[0] == pytest.approx(true_se, rel=0.5)


def test_forward_dropout_uses_the_mask_and_inverted_scaling():
    x = np.array([[2.0, -4.0]])
    (y,) = bref.forward((("dropout",),), {}, x, training=True, rate=0.5, eps=0.0, masks=[np.array([[True, False]])])
    assert y.tolist() == [[4.0, 0.0]]
    (y,) = bref.forward((("dropout",),), {}, x, training=False, rate=0.5, eps=0.0)
    assert y.tolist() == x.tolist()


def test_forward_relu_bn_and_softmax_by_hand():
    w = {"dense.kernel": np.array([[1.0, -1.0]]), "dense.bias": np.array([0.5]), "bn.scale": np.array([2.0]),
         "bn.offset": np.array([1.0]), "bn.mean": np.array([0.0]), "bn.var": np.array([4.0])}
    x = np.array([[1.0, 0.0], [0.0, 1.0]])  # dense: 1.5, -0.5; relu: 1.5, 0; bn (train, mean .75, var .5625)
    outs = bref.forward(BLOCKS["linear_relu_bn"], w, x, training=True, rate=0.0, eps=0.0)
    assert outs[0].ravel().tolist() == [1.5, -0.5]
    assert outs[1].ravel().tolist() == [1.5, 0.0]
    assert outs[2].ravel() == pytest.approx([3.0, -1.0])  # (+-0.75 / 0.75) * 2 + 1
    inf = bref.forward(BLOCKS["linear_bn_relu"], w, x, training=False, rate=0.0, eps=0.0)
    assert inf[2].ravel() == pytest.approx([2.5, 0.5])  # relu((1.5, -0.5) / 2 * 2 + 1)
    one = bref.forward(BLOCKS["dense_softmax_1"], w, x, training=False, rate=0.0, eps=0.0)
    assert one[1].ravel().tolist() == [1.0, 1.0]
    batch = bref.forward(BLOCKS["softmax_over_batch"], w, x, training=False, rate=0.0, eps=0.0)
    assert batch[1].ravel() == pytest.approx([np.e ** 2 / (np.e ** 2 + 1), 1 / (np.e ** 2 + 1)])


def test_bce_and_grads_by_hand():
    # z = 0 for both samples: p = 1/2, loss = log 2, dL/dz = (1/2 - t)/2
    w = {"dense.kernel": np.array([[0.0, 0.0]]), "dense.bias": np.array([0.0])}
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = np.array([[1.0], [0.0]])
    loss, gk, gb = bref.bce_and_grads(w, x, t)
    assert loss == pytest.approx(np.log(2.0))
    assert gk.ravel() == pytest.approx([(-0.25 * 1 + 0.25 * 3), (-0.25 * 2 + 0.25 * 4)])
    assert gb.ravel() == pytest.approx([0.0])


def test_block_spec_features():
    assert BlockSpec("dropout_bn", 4).features == 4
    assert BlockSpec("linear_relu_bn", 6).features == 4


def test_adapter_without_blocks_is_unsupported():
    class NoBlocks:
        id = "none"
        capabilities = {}

    with pytest.raises(Unsupported, match="no 'blocks' capability"):
        capabilities.load(NoBlocks, "blocks")


@pytest.mark.parametrize("adapter_id", list(registry.BUILTIN))
def test_block_declaration_is_cited(adapter_id):
    """Every built-in adapter's blocks declaration (where it has blocks) cites a source for every value and uses
    the known categories (importing a block module imports no framework)."""
    try:
        decl = capabilities.load(registry.load(adapter_id), "blocks").declaration
    except capabilities.CapabilityAbsent as e:
        pytest.skip(str(e))
    for name in ("dropout_scaling", "bce_losses", "one_unit_softmax_bce"):
        assert getattr(decl, name).source.strip(), f"{adapter_id}: {name} has no source"
    assert decl.dropout_scaling.value in ("inverted", "classic")
    assert set(decl.bce_losses.value.values()) <= {"logits", "probabilities"} and decl.bce_losses.value
    per_loss = decl.one_unit_softmax_bce.value
    per_loss = per_loss if isinstance(per_loss, dict) else dict.fromkeys(decl.bce_losses.value, per_loss)
    assert set(per_loss) == set(decl.bce_losses.value), f"{adapter_id}: one_unit_softmax_bce names other losses"
    assert set(per_loss.values()) <= {"zero", "sigmoid-of-its-input", "nan"}
    at_one = decl.bce_at_probability_one
    takes_p = {k for k, v in decl.bce_losses.value.items() if v == "probabilities"}
    # Optional for a user's blocks; every built-in one with a loss on probabilities says what it does at p = 1.
    assert at_one is not None or not takes_p, f"{adapter_id}: no bce_at_probability_one for {sorted(takes_p)}"
    if at_one is not None:
        assert at_one.source.strip(), f"{adapter_id}: bce_at_probability_one has no source"
        assert at_one.value and set(at_one.value) == takes_p, \
            f"{adapter_id}: bce_at_probability_one names other losses than those taking probabilities"
        assert set(at_one.value.values()) <= {"finite", "non-finite gradient", "non-finite loss",
                                              "non-finite loss and gradient"}
