"""Triton clients behind the domain's ports, with heuristic fallbacks (see inference/README in the top README)."""
