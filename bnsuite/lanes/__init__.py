"""Lanes: the eager cases run again through another path (a compiler, a function transform, ...), each checked
against the same adapter run eagerly AND the float64 oracle. One subpackage per lane; an adapter names a lane's
implementation for its framework in its capability table (bnsuite.adapters.capabilities)."""
