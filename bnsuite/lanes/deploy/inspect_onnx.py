"""What an exported ONNX file carries for its BatchNorm: the node's attributes, its running statistics as stored, and
whether the batch dimension is symbolic. Reads the file with `onnx` only (no runtime)."""

from __future__ import annotations

import numpy as np


def bn_facts(path: str) -> dict:
    """{"bn_nodes": n, "epsilon", "momentum", "training_mode" (of the first node; None where unset or absent),
    "mean", "var" (its running statistics as stored, float64, or None), "batch_dim" (the input's first dimension: a
    name where symbolic, else its size), "ops" (every node's type)}."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for node in g.node:  # Constant nodes (the dynamo exporter folds initializers into them at times)
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    bns = [n for n in g.node if n.op_type == "BatchNormalization"]
    facts: dict = {"bn_nodes": len(bns), "epsilon": None, "momentum": None, "training_mode": None, "mean": None,
                   "var": None, "ops": [n.op_type for n in g.node]}
    if bns:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in bns[0].attribute}
        facts.update(epsilon=attrs.get("epsilon"), momentum=attrs.get("momentum"),
                     training_mode=attrs.get("training_mode"))
        for key, name in (("mean", bns[0].input[3]), ("var", bns[0].input[4])):
            if name in consts:
                facts[key] = np.asarray(consts[name], np.float64)
    dim = g.input[0].type.tensor_type.shape.dim[0]
    facts["batch_dim"] = dim.dim_param or dim.dim_value
    return facts
