"""Benchmarks: python -m torch_sparse_conv.bench --help."""
