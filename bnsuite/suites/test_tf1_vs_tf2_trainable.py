"""TF1 vs TF2 `trainable=False`, side by side: the same input, the same frozen weights, both layers in one process.

TF2's layer (tf_keras V2) runs a non-trainable BatchNormalization in inference mode whatever `training` says; the TF1
layer (tf.compat.v1.keras) keeps normalizing with the batch statistics. Both layers import only where
TF_USE_LEGACY_KERAS=1 is set, so this runs in the tf1-keras process and records the numbers for the report.
"""

import numpy as np
import pytest

from bnsuite.adapters import reference as ref
from bnsuite.adapters import registry
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import tolerances as tl
from bnsuite.suites.cases import Case
from bnsuite.suites.checks import Recorder


@pytest.fixture
def both_layers(request):
    selected = {cls.id for cls in request.config._bn_adapters}
    if "tf1-keras" not in selected:
        pytest.skip("runs with the tf1-keras adapter (TF_USE_LEGACY_KERAS=1), where both layers import")
    classes = [registry.load("tf_keras"), registry.load("tf1-keras")]
    for cls in classes:
        why = cls.unavailable_reason()
        if why:
            pytest.skip(f"{cls.id}: {why}")
    return classes


@pytest.mark.parametrize("training", [True, False, None], ids=["training=True", "training=False", "training-omitted"])
def test_trainable_false_side_by_side(both_layers, request, training):
    writer = request.config._bn_writer
    repro = f"TF_USE_LEGACY_KERAS=1 python -m pytest '{request.node.nodeid}' --adapter tf1-keras"
    recs = {cls.id: Recorder(writer, test=request.node.nodeid, adapter=cls.id, device="cpu", dtype="float32",
                             repro=repro) for cls in both_layers}
    idiom = {True: "trainable_false_training_true", False: "trainable_false_training_false",
             None: "trainable_false_training_omitted"}[training]
    rows = []
    with ch.judged_together(*recs.values()):
        for cls in both_layers:
            rec = recs[cls.id]
            case = Case(cls, "cpu", "float32")
            spec = case.spec(rank=4, channels_last=True, momentum=0.1)
            bn = cls(spec)
            st = data.state(spec)
            bn.set_state(st)
            bn.set_trainable(False)
            x = data.batch(spec)
            y = bn.forward(x, training=training)
            after = bn.get_state()
            y_batch, _ = ref.forward_train(x, st.scale, st.offset, spec.eps, spec.channel_axis)
            y_run = ref.forward_inference(x, st.scale, st.offset, st.mean, st.var, spec.eps, spec.channel_axis)
            tol = tl.bn_output(x, spec.channel_axis, y_batch, st.scale, spec.eps, io_dtype=spec.dtype)
            uses = ch.classify(y, {"batch": y_batch, "running": y_run}, tol)
            moved = bool(np.any(after.mean != st.mean))
            declared = case.decl.freeze[idiom]
            rows.append([cls.id, str(training), uses, float(np.max(np.abs(y - y_run))),
                         float(np.max(np.abs(y - y_batch))), moved])
            ch.equal(rec, "tf1_vs_tf2_normalizes_with", declared.value.normalizes_with, uses, source=declared.source,
                     extra={"training": str(training)})
            ch.equal(rec, "tf1_vs_tf2_running_stats_update", declared.value.running_stats_update, moved,
                     source=declared.source, extra={"training": str(training)})
        if writer is not None:
            writer.write("table", name=f"tf1_vs_tf2_trainable_false_{training}",
                         columns=["layer", "training", "normalizes with", "max |y - y_running|", "max |y - y_batch|",
                                  "running stats moved"], rows=rows)
