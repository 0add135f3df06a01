// Makes the shared library importable as torch_sparse_conv._C. Importing it runs the
// TORCH_LIBRARY registrations, and every operator is then reached through
// torch.ops.torch_sparse_conv. The Python functions here are compat's CPU entry point,
// toeplitz_conv2d's eager call on a CSR tensor, the release of cached output memory and kept
// patterns, and for tests the pattern cache's counters and a trace of parallel_tasks.
#include <ATen/PythonTorchFunctionTLS.h>
#include <pybind11/numpy.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/extension.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "csrc/common/balanced_parallel.h"
#include "csrc/common/dtypes.h"
#include "csrc/common/output_buffer_cache.h"
#include "csrc/sparse_filter/checks.h"
#include "csrc/sparse_filter/cpu/direct.h"
#include "csrc/sparse_filter/cpu/simd.h"
#include "csrc/sparse_filter/method.h"
#include "csrc/sparse_filter/pattern_cache.h"
#include "csrc/toeplitz/cpu/direct.h"
#include "csrc/toeplitz/geometry.h"
#include "csrc/torch_sparse_conv.h"

namespace {

namespace py = pybind11;

template <typename T>
bool holds(py::handle array) {
  return py::array_t<T>::check_(array);  // a numpy array of T (native byte order)
}

// `array` as a C-contiguous numpy array (copied only where it is not) of `dims` dimensions.
py::array contiguous(py::handle array, int dims, const char* name) {
  TORCH_CHECK_TYPE(py::isinstance<py::array>(array), "_toeplitz_conv2d_scipy_numpy: ", name,
                   " must be a numpy array");
  py::array result = py::array::ensure(array, py::array::c_style);
  TORCH_CHECK(result.ndim() == dims, "_toeplitz_conv2d_scipy_numpy: ", name, " must have ",
              dims, " dimensions, got ", result.ndim());
  return result;
}

// An index array's entries as int64 (widened into storage when they are int32).
const int64_t* index_array(const py::array& array, const char* name,
                           c10::DataPtr& storage) {
  const bool is_int32 = holds<int32_t>(array);
  TORCH_CHECK_TYPE(is_int32 || holds<int64_t>(array), "_toeplitz_conv2d_scipy_numpy: ", name,
                   " must hold int32 or int64 indices, got ",
                   std::string(py::str(array.dtype())));
  return torch_sparse_conv::as_int64_indices(array.data(), is_int32, array.size(), storage);
}

// A 1-D numpy array of `size` elements that owns `data` (freed with the array).
py::array numpy_over(c10::DataPtr data, int64_t size, at::ScalarType dtype) {
  auto owner = std::make_unique<c10::DataPtr>(std::move(data));
  void* pointer = owner->get();
  py::capsule base(owner.get(), [](void* p) { delete static_cast<c10::DataPtr*>(p); });
  owner.release();  // the capsule has it now
  const py::dtype type = dtype == at::kInt      ? py::dtype::of<int32_t>()
                         : dtype == at::kLong   ? py::dtype::of<int64_t>()
                         : dtype == at::kFloat  ? py::dtype::of<float>()
                                                : py::dtype::of<double>();
  const auto item = static_cast<py::ssize_t>(type.itemsize());
  return py::array(type, {static_cast<py::ssize_t>(size)}, {item}, pointer, base);
}

// _toeplitz_conv2d_scipy's CPU kernel on scipy's own numpy arrays, without tensors: at batch 1
// the dispatcher and wrapping arrays as tensors and back took most of compat's call. The
// inputs are read in place (int32 indices widened), the outputs are numpy arrays over the
// kernel's buffers. Checks as the operator's: one dtype for data and kernel, a valid CSR.
py::tuple toeplitz_conv2d_scipy_numpy(py::handle indptr, py::handle indices, py::handle data,
                                      py::handle kernel, int64_t height, int64_t width,
                                      const std::string& mode) {
  HANDLE_TH_ERRORS
  const py::array row_pointers = contiguous(indptr, 1, "indptr");
  const py::array columns = contiguous(indices, 1, "indices");
  const py::array values = contiguous(data, 1, "data");
  const py::array taps = contiguous(kernel, 2, "kernel");
  const bool is_double = holds<double>(values);
  TORCH_CHECK_TYPE(is_double || holds<float>(values),
                   "_toeplitz_conv2d_scipy_numpy: data must be float32 or float64, got ",
                   std::string(py::str(values.dtype())));
  TORCH_CHECK_TYPE(is_double ? holds<double>(taps) : holds<float>(taps),
                   "_toeplitz_conv2d_scipy_numpy: kernel must have data's dtype (",
                   std::string(py::str(values.dtype())), "), got ",
                   std::string(py::str(taps.dtype())));
  TORCH_CHECK(row_pointers.size() >= 1,
              "_toeplitz_conv2d_scipy_numpy: indptr must have B + 1 >= 1 entries");
  TORCH_CHECK(values.size() == columns.size(), "_toeplitz_conv2d_scipy_numpy: data (",
              values.size(), ") must have one value per column index (", columns.size(), ")");
  torch_sparse_conv::ToeplitzGeometry g =
      torch_sparse_conv::toeplitz_geometry(taps.shape(0), taps.shape(1), {height, width}, mode);
  g.batch = row_pointers.size() - 1;
  c10::DataPtr wide_indptr, wide_indices;
  const int64_t* crow = index_array(row_pointers, "indptr", wide_indptr);
  const int64_t* col = index_array(columns, "indices", wide_indices);
  torch_sparse_conv::check_csr_arrays(crow, col, g.batch, columns.size(), g.in_h * g.in_w,
                                      {"toeplitz_conv2d", "x's ", "indptr", "indices", "H*W"});
  // The GIL stays held: the kernel reads scipy's arrays in place after checking them, and
  // another Python thread must not change them in between (sparse_convolution's numba
  // kernels hold it too).
  torch_sparse_conv::ScipyCsrBuffers out = torch_sparse_conv::toeplitz_conv2d_scipy_buffers(
      crow, col, values.data(), taps.data(), is_double ? at::kDouble : at::kFloat, g);
  return py::make_tuple(numpy_over(std::move(out.indptr), out.rows + 1, out.index_type),
                        numpy_over(std::move(out.indices), out.entries, out.index_type),
                        numpy_over(std::move(out.values), out.entries, out.value_type));
  END_HANDLE_TH_ERRORS_PYBIND
}

// A positive Python int (bool, numpy's integers and anything else excluded) read into `value`.
bool positive_int(PyObject* item, int64_t& value) {
  if (!PyLong_CheckExact(item)) return false;
  int overflow = 0;
  value = PyLong_AsLongLongAndOverflow(item, &overflow);
  return overflow == 0 && value > 0;
}

// (H, W) from a tuple (torch.Size included) or list of two positive Python ints.
bool image_shape_pair(PyObject* shape, int64_t& h, int64_t& w) {
  if (PyTuple_Check(shape) && PyTuple_GET_SIZE(shape) == 2) {
    return positive_int(PyTuple_GET_ITEM(shape, 0), h) &&
           positive_int(PyTuple_GET_ITEM(shape, 1), w);
  }
  if (PyList_Check(shape) && PyList_GET_SIZE(shape) == 2) {
    return positive_int(PyList_GET_ITEM(shape, 0), h) &&
           positive_int(PyList_GET_ITEM(shape, 1), w);
  }
  return false;
}

// A Python str's text (false for anything else).
bool text_of(PyObject* object, std::string& text) {
  if (!PyUnicode_Check(object)) return false;
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(object, &size);
  if (data == nullptr) {
    PyErr_Clear();  // a str that is not valid UTF-8: the Python path reports it
    return false;
  }
  text.assign(data, size);
  return true;
}

// toeplitz_conv2d(x, kernel, image_shape, mode, method) in one C++ call for the eager call
// on plain tensors that passes every argument check: x a sparse CSR (B, H*W) batch, kernel a
// dense nonempty (kH, kW) of x's dtype and device. The Python wrapper's checks, its three
// accessors and the CSR tensor built around the result took 10 us of a batch-1 call whose
// kernel takes 8. Returns None for anything else (subclasses, tracing, a torch-function mode,
// any argument that a check would reject): the Python path then runs and says what is
// wrong, so its messages stay the only ones. The same C++ API and operator run either way.
py::object toeplitz_conv2d_csr(py::handle x_object, py::handle kernel_object,
                               py::handle image_shape, py::handle mode_object,
                               py::handle method_object) {
  HANDLE_TH_ERRORS
  if (!THPVariable_CheckExact(x_object.ptr()) || !THPVariable_CheckExact(kernel_object.ptr()) ||
      at::impl::torch_function_mode_enabled() || torch::jit::tracer::isTracing()) {
    return py::none();
  }
  const at::Tensor& x = THPVariable_Unpack(x_object.ptr());
  const at::Tensor& kernel = THPVariable_Unpack(kernel_object.ptr());
  int64_t h = 0, w = 0;
  std::string mode, method;
  if (!image_shape_pair(image_shape.ptr(), h, w) || !text_of(mode_object.ptr(), mode) ||
      !text_of(method_object.ptr(), method)) {
    return py::none();
  }
  const std::optional<torch_sparse_conv::ToeplitzMode> parsed_mode =
      torch_sparse_conv::toeplitz_mode_named(mode);
  int64_t pixels = 0;
  if (!parsed_mode || !torch_sparse_conv::toeplitz_method_named(method) ||
      __builtin_mul_overflow(h, w, &pixels) ||
      x.layout() != at::kSparseCsr || x.dim() != 2 || x.size(1) != pixels ||
      kernel.layout() != at::kStrided || kernel.dim() != 2 || kernel.size(0) < 1 ||
      kernel.size(1) < 1 || !torch_sparse_conv::is_supported_dtype(x.scalar_type()) ||
      kernel.scalar_type() != x.scalar_type() || kernel.device() != x.device() ||
      (*parsed_mode == torch_sparse_conv::ToeplitzMode::Valid &&
       (kernel.size(0) > h || kernel.size(1) > w))) {
    return py::none();
  }
  at::Tensor out;
  {
    py::gil_scoped_release no_gil;  // as torch's own operators run
    out = torch_sparse_conv::toeplitz_conv2d(x, kernel, {h, w}, mode, method);
  }
  return py::reinterpret_steal<py::object>(THPVariable_Wrap(std::move(out)));
  END_HANDLE_TH_ERRORS_PYBIND
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.def("_release_cached_outputs", &torch_sparse_conv::release_cached_outputs,
        "Frees the cached memory of freed Toeplitz outputs; returns the bytes released.");
  m.def("_release_cached_patterns", &torch_sparse_conv::release_cached_patterns,
        "Frees the sparse-filter patterns the CPU kernels keep (the forward's checked ones, "
        "the backward's transposed and per-phase ones); returns the bytes released.");
  m.def("_pattern_cache_counters",
        [] {
          const torch_sparse_conv::PatternCacheCounters c =
              torch_sparse_conv::pattern_cache_counters();
          py::dict counters;
          counters["patterns_found"] = c.patterns_found;
          counters["patterns_built"] = c.patterns_built;
          counters["plans_found"] = c.plans_found;
          counters["plans_built"] = c.plans_built;
          return counters;
        },
        "How often since the process started a sparse-filter pattern was found kept or "
        "built, and a plan kept with one was found or built (pattern_cache.h): for tests.");
  m.def("_parallel_tasks_trace",
        [](int64_t tasks, int64_t slow_thread, int64_t slow_us) {
          TORCH_CHECK(tasks >= 0, "_parallel_tasks_trace: tasks must be >= 0");
          std::vector<std::atomic<int64_t>> runs(tasks);
          for (auto& r : runs) r.store(0);
          std::vector<int64_t> ran_on(tasks, -1);
          {
            py::gil_scoped_release no_gil;
            torch_sparse_conv::parallel_tasks(tasks, [&](int64_t t) {
              runs[t].fetch_add(1);
              ran_on[t] = at::get_thread_num();
              if (ran_on[t] == slow_thread) {
                std::this_thread::sleep_for(std::chrono::microseconds(slow_us));
              }
            });
          }
          std::vector<int64_t> counts(tasks);
          for (int64_t t = 0; t < tasks; ++t) counts[t] = runs[t].load();
          return py::make_tuple(counts, ran_on);
        },
        "Runs parallel_tasks (csrc/common/balanced_parallel.h) over `tasks` tasks, each task "
        "on thread `slow_thread` sleeping slow_us microseconds; returns how often each task "
        "ran and on which thread (for tests).");
  m.def("_cpu_auto_rule", [] { return std::string(torch_sparse_conv::cpu_auto_rule().name); },
        "The name of the constants the CPU 'auto' rule of sparse_filter_conv2d uses on this "
        "processor ('zen4' or 'intel-xeon').");
  m.def(
      "_auto_rules",
      [] {
        // Each rule in scripts/fit_auto_rule.py's form: run -> (efficiency, overhead) per
        // layout; per layout (overhead per extra stride phase, efficiency factor); dense's
        // (rebuild, per density, outputs power).
        auto models = [](const auto& table) {
          py::dict runs;
          for (const torch_sparse_conv::DirectCostModel& m : table) {
            runs[py::int_(m.min_run)] = py::make_tuple(m.efficiency, m.overhead);
          }
          return runs;
        };
        py::dict rules;
        for (const torch_sparse_conv::AutoRule* r : torch_sparse_conv::kAutoRules) {
          py::dict rule, by_layout, stride;
          by_layout["lanes"] = models(r->lanes);
          by_layout["one-sample"] = models(r->one_sample);
          by_layout["pointwise"] = models(r->pointwise);
          stride["lanes"] = py::make_tuple(r->lanes_stride_overhead, r->lanes_stride_efficiency);
          stride["one-sample"] = py::make_tuple(0.0, r->one_sample_stride_efficiency);
          rule["models"] = by_layout;
          rule["stride"] = stride;
          rule["dense"] = py::make_tuple(r->dense_rebuild, r->dense_rebuild_per_density,
                                         r->dense_rebuild_outputs_power);
          rules[py::str(r->name)] = rule;
        }
        return rules;
      },
      "Every CPU 'auto' rule's constants (csrc/sparse_filter/method.h), by name, in the form "
      "scripts/fit_auto_rule.py fits and scores them.");
  m.def("_conv_block_vector_bytes",
        [] { return torch_sparse_conv::sparse_filter_simd<float>().conv_block_bytes; },
        "The bytes of the vectors the CPU sparse-filter 'direct' kernel of one-sample runs "
        "computes in (64 or 32 with AVX-512, by processor or TSC_CONV_VECTOR_BYTES).");
  m.def("_direct_strip_rows",
        [](const at::Tensor& input, const at::Tensor& row_ptr, const at::Tensor& col_idx,
           const at::Tensor& values, std::vector<int64_t> weight_size,
           std::vector<int64_t> stride, std::vector<int64_t> padding,
           std::vector<int64_t> dilation, int64_t groups) {
          const torch_sparse_conv::SparseFilterGeometry g =
              torch_sparse_conv::check_sparse_filter_conv2d_args(
                  input.dim() == 3 ? input.unsqueeze(0) : input, row_ptr, col_idx, values,
                  weight_size, c10::nullopt, stride, padding, dilation, groups);
          return torch_sparse_conv::direct_lanes_strip_rows(g, input.scalar_type());
        },
        "The output rows a strip where the CPU 'direct' forward takes a single sample into the "
        "vector lanes as horizontal strips, else 0 (csrc/sparse_filter/cpu/direct_lanes.cpp): "
        "for tests.");
  m.def("_toeplitz_conv2d_scipy_numpy", &toeplitz_conv2d_scipy_numpy,
        "compat.Toeplitz_convolution2d's CPU kernel on numpy arrays: (indptr, indices, data) "
        "of scipy's CSR batch, a C-order 2-D kernel array of data's dtype, H, W, mode -> the "
        "output's (indptr, indices, data), int32 indices when they fit, exact zeros left "
        "out.");
  m.def("_toeplitz_conv2d_csr", &toeplitz_conv2d_csr,
        "toeplitz_conv2d(x, kernel, image_shape, mode, method) for an eager call on a sparse "
        "CSR tensor whose arguments pass every check; None where the Python path must run.");
}
