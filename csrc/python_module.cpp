// Makes the shared library importable as torch_sparse_conv._C. It exposes no Python
// functions: importing it runs the TORCH_LIBRARY registrations, and every operator is then
// reached through torch.ops.torch_sparse_conv.
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
}
