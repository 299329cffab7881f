"""The layers of a reference_net plan, built by one framework's constructors."""

from __future__ import annotations

from typing import Any, Callable


def plan_layers(ops: list[tuple], conv: Callable[[int, int, int], Any], bn: Callable[[int], Any],
                dense: Callable[[int, int], Any]) -> dict[str, Any]:
    """Canonical layer name -> layer for the ops of `reference_net.plan`, in plan order.

    `conv(cin, cout, k)` builds a k x k stride-1 convolution that keeps the image size (k is 1 for a block's
    convolution), `bn(channels)` a BatchNorm, `dense(cin, cout)` a fully connected layer. A block contributes
    "<name>.bn" then "<name>.conv"; relu and gap hold no layer.
    """
    layers: dict[str, Any] = {}
    for op in ops:
        if op[0] == "conv":
            layers[op[1]] = conv(op[2], op[3], op[4])
        elif op[0] == "bn":
            layers[op[1]] = bn(op[2])
        elif op[0] == "dense":
            layers[op[1]] = dense(op[2], op[3])
        elif op[0] == "block":
            layers[f"{op[1]}.bn"] = bn(op[2])
            layers[f"{op[1]}.conv"] = conv(op[2], op[3], 1)
    return layers
