"""The runtime side of the deploy lane, run as its own process: a runtime that crashes or hangs costs one request.

Protocol: one JSON request per line on stdin, one JSON answer per line on stdout.
Request: {"runtime": <name in RUNTIMES>, "path": <model file>, "inputs": <.npz of x0, x1, ...>, "out": <.npz to write>,
"expose": [<tensor names to add as graph outputs (ONNX only)>]}.
Answer: {"ok": true, "info": {...}} with every input's outputs written to `out` as y<i>_<j> (input i, output j), or
{"ok": false, "error": "<type>: <message>"}.

Each runtime reports what it ran: the operator types of the graph it executed (to see folding) and its precision.
Imports only the runtime it serves and NumPy.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def _onnx_with_outputs(path: str, expose: list[str]) -> bytes:
    import onnx

    model = onnx.load(path)
    for name in expose:  # a node's output made a graph output, with its type inferred by the runtime
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return model.SerializeToString()


def _ort(level: str):
    def run(path, xs, expose, tmp):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        optimized = os.path.join(tmp, "ort_optimized.onnx")
        so.optimized_model_filepath = optimized  # the graph ORT runs, after its rewrites
        sess = ort.InferenceSession(_onnx_with_outputs(path, expose), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        outs = [sess.run(None, {name: x}) for x in xs]
        import onnx

        ops = [n.op_type for n in onnx.load(optimized).graph.node] if os.path.exists(optimized) else []
        return outs, {"ops": ops, "precision": "float32", "version": ort.__version__}
    return run


def _onnx_reference(path, xs, expose, tmp):
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = onnx.load_from_string(_onnx_with_outputs(path, expose))
    sess = ReferenceEvaluator(model)
    name = model.graph.input[0].name
    outs = [sess.run(None, {name: x}) for x in xs]
    return outs, {"ops": [n.op_type for n in model.graph.node], "precision": "float32", "version": onnx.__version__}


def _openvino(precision: str | None):
    def run(path, xs, expose, tmp):
        import openvino as ov

        core = ov.Core()
        config = {} if precision is None else {"INFERENCE_PRECISION_HINT": precision}
        compiled = core.compile_model(core.read_model(path), "CPU", config)
        outs = [[np.asarray(v) for v in compiled(x).values()] for x in xs]
        runtime_ops = [op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()]
        hint = str(compiled.get_property("INFERENCE_PRECISION_HINT"))  # "<Type: 'bfloat16'>" or "f32"
        return outs, {"ops": [op.get_type_name() for op in core.read_model(path).get_ordered_ops()],
                      "runtime_ops": runtime_ops, "precision": hint.split("'")[-2] if "'" in hint else hint,
                      "version": ov.get_version()}
    return run


def _litert(path, xs, expose, tmp):
    from ai_edge_litert.interpreter import Interpreter
    import ai_edge_litert

    it = Interpreter(model_path=path)
    ops = [d["op_name"] for d in it._get_ops_details()]
    inp = it.get_input_details()[0]
    outs = []
    for x in xs:
        it.resize_tensor_input(inp["index"], list(x.shape))
        it.allocate_tensors()
        it.set_tensor(inp["index"], x.astype(inp["dtype"]))
        it.invoke()
        outs.append([np.asarray(it.get_tensor(d["index"]), np.float64) for d in it.get_output_details()])
    tensor_types = sorted({str(np.dtype(t["dtype"])) for t in it.get_tensor_details()})
    # the kernels compute in float32 (a float16 model's weights are dequantized); int8 tensors are quantized values
    return outs, {"ops": ops, "precision": "float32", "tensor_types": tensor_types,
                  "version": ai_edge_litert.__version__}


RUNTIMES = {
    "ort-off": _ort("ORT_DISABLE_ALL"),
    "ort-all": _ort("ORT_ENABLE_ALL"),
    "onnx-reference": _onnx_reference,
    "openvino": _openvino(None),
    "openvino-f32": _openvino("f32"),
    "litert": _litert,
}


def serve(stdin=sys.stdin, stdout=sys.stdout) -> None:
    for line in stdin:
        try:
            req = json.loads(line)
            with np.load(req["inputs"]) as z:
                xs = [z[f"x{i}"] for i in range(len(z.files))]
            outs, info = RUNTIMES[req["runtime"]](req["path"], xs, req.get("expose", []), os.path.dirname(req["out"]))
            np.savez(req["out"], **{f"y{i}_{j}": np.asarray(y) for i, ys in enumerate(outs) for j, y in enumerate(ys)})
            answer = {"ok": True, "info": info}
        except Exception as e:  # the runtime's refusal is the request's answer, the worker lives on
            answer = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:600]}"}
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


if __name__ == "__main__":
    answers = os.fdopen(os.dup(1), "w")  # the protocol's channel; whatever a runtime prints goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin, answers)
