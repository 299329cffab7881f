"""Lanes: the same BatchNorm cases run through another path (compiled, transformed, exported to a runtime, folded,
quantized, inside a training loop) and checked against the framework run eagerly and the float64 oracle. Each lane is
a capability (adapters/capabilities.py)."""
