"""Tests of torch_sparse_conv.sparse_filter: the sparse-filter conv2d (functional, nn, compat
recipe functions), on every device."""
