// Makes the shared library importable as torch_sparse_conv._C. Importing it runs the
// TORCH_LIBRARY registrations, and every operator is then reached through
// torch.ops.torch_sparse_conv. The Python functions here are compat's CPU entry point and
// the release of cached output memory.
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/utils/tensor_numpy.h>
#include <torch/extension.h>

#include <string>

#include "output_buffer_cache.h"
#include "toeplitz_direct_cpu.h"

namespace {

namespace py = pybind11;

py::object as_numpy(const at::Tensor& tensor) {
  return py::reinterpret_steal<py::object>(torch::utils::tensor_to_numpy(tensor));
}

// _toeplitz_conv2d_scipy's CPU kernel on scipy's own numpy arrays, without the dispatcher and
// the tensor wrapping on both sides: at batch 1 those took about half of compat's call. The
// arrays are shared, not copied.
py::tuple toeplitz_conv2d_scipy_numpy(py::handle indptr, py::handle indices, py::handle data,
                                      const at::Tensor& kernel, int64_t height, int64_t width,
                                      const std::string& mode) {
  HANDLE_TH_ERRORS
  const at::Tensor crow = torch::utils::tensor_from_numpy(indptr.ptr(), false);
  const at::Tensor col = torch::utils::tensor_from_numpy(indices.ptr(), false);
  const at::Tensor values = torch::utils::tensor_from_numpy(data.ptr(), false);
  // The GIL stays held: the kernel reads scipy's arrays in place after checking them, and
  // another Python thread must not change them in between (sparse_convolution's numba
  // kernels hold it too).
  const auto out = torch_sparse_conv::toeplitz_conv2d_scipy_cpu(crow, col, values, kernel,
                                                                {height, width}, mode);
  return py::make_tuple(as_numpy(std::get<0>(out)), as_numpy(std::get<1>(out)),
                        as_numpy(std::get<2>(out)));
  END_HANDLE_TH_ERRORS_PYBIND
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.def("_release_cached_outputs", &torch_sparse_conv::release_cached_outputs,
        "Frees the cached memory of freed Toeplitz outputs; returns the bytes released.");
  m.def("_toeplitz_conv2d_scipy_numpy", &toeplitz_conv2d_scipy_numpy,
        "compat.Toeplitz_convolution2d's CPU kernel on numpy arrays: (indptr, indices, data) "
        "of scipy's CSR batch, a CPU kernel tensor of data's dtype, H, W, mode -> the output's "
        "(indptr, indices, data), int32 indices when they fit, exact zeros left out.");
}
