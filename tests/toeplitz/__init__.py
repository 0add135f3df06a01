"""Tests of torch_sparse_conv.toeplitz: the sparse-input (Toeplitz) conv2d (functional, nn,
compat.Toeplitz_convolution2d, the output cache), on every device."""
