// The library torch_sparse_conv itself: its build facts and the anchor that keeps it linked.
//
// Each operator family adds its schemas to it (TORCH_LIBRARY_FRAGMENT) next to the fronts
// that call them: csrc/sparse_filter/ops.h and csrc/toeplitz/ops.h. Kernels are registered
// per family and dispatch key: csrc/<family>/cpu/, cuda/<family>/, csrc/<family>/*autograd.cpp,
// and the fake kernels in torch_sparse_conv/<family>/.
#include <torch/library.h>

#include "csrc/torch_sparse_conv.h"

#ifdef TSC_WITH_CUDA
#include <cuda.h>  // CUDA_VERSION of the toolkit the library was built with
#endif

namespace torch_sparse_conv {

int64_t cuda_version_compiled() {
#ifdef TSC_WITH_CUDA
  return CUDA_VERSION;
#else
  return 0;
#endif
}

// Referenced from the public header so that a C++ binary linking the library keeps it
// (and with it these registrations) even under --as-needed.
int64_t registration_anchor() { return cuda_version_compiled(); }

}  // namespace torch_sparse_conv

TORCH_LIBRARY(torch_sparse_conv, m) {
  // Build facts, so Python and TorchScript can ask how the library was compiled.
  // 0 when built without CUDA, else CUDA_VERSION (e.g. 13000).
  m.def("_cuda_version() -> int", &torch_sparse_conv::cuda_version_compiled);
}
