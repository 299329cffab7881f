"""Lanes: the suite's cases run through another path (compiled, exported, folded, quantized) and checked against the
same adapter run eagerly AND the float64 oracle."""
