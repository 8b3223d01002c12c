"""Triton kernels of tempo_fast.ops, one module per op; imported only when a Triton backend runs."""
