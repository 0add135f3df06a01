// How C++ code calls an operator of this library: through the dispatcher, so that autograd,
// the device kernels and any other registered key (Meta, tracing) apply exactly as they do
// for torch.ops.torch_sparse_conv.<op> in Python.
//
// Every family header (csrc/<family>/ops.h) declares one front per operator, and its ops.cpp
// defines it as `return typed_operator<decltype(front)>("<op>").call(args...)`: the front's
// own signature types the handle, so the argument list is written once.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

namespace torch_sparse_conv {

// The typed handle of torch_sparse_conv::<name>. Look it up once per front (a function-local
// static): the lookup takes the dispatcher's lock.
template <class Signature>
c10::TypedOperatorHandle<Signature> typed_operator(const char* name) {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow((std::string("torch_sparse_conv::") + name).c_str(), "")
      .template typed<Signature>();
}

}  // namespace torch_sparse_conv
