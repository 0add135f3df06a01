// Runs CUDA kernels on the CPU, for tests on machines without a GPU.
//
// The kernel headers (cuda/*_kernels.cuh) compile with nvcc for the GPU and with a host C++
// compiler for tests/cpp/test_cuda_kernels_emulated.cpp. There, `launch` runs a kernel the
// way a GPU would, block after block: every thread of a block is a fiber (ucontext) with its
// own stack, `__syncthreads()` parks a fiber until every thread of its block has reached the
// barrier, dynamic shared memory is one buffer per block of exactly the requested size,
// filled with 0xFF bytes (NaN for floats) before each block so reads of never-written shared
// memory show. Between two barriers the threads run forward, backward or shuffled (in turn),
// so a missing barrier changes results. Undefined behaviour on a GPU throws
// std::logic_error: a barrier only some threads of a block reach, or threads waiting at
// different barriers. An exception inside a thread is rethrown by launch().
//
// It checks what a kernel computes, its indexing and its barriers, not its speed, and
// threads never run at the same time, so it cannot show data races. Device functions it
// knows: __syncthreads, min, max, atomicAdd.
#pragma once

#ifdef __CUDACC__
#error "cuda/common/kernel_emulation.h is for host compilers; nvcc builds the real kernels"
#endif

#include <ucontext.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <exception>
#include <functional>
#include <random>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace tsc_emulation {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
  Dim3() = default;
  Dim3(unsigned x_, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}  // NOLINT
  size_t volume() const { return size_t(x) * y * z; }
};

// What threadIdx, blockIdx, blockDim and gridDim read in emulated kernels.
struct LaunchIndices {
  Dim3 thread_idx, block_idx, block_dim, grid_dim;
};
inline LaunchIndices current;

namespace detail {

constexpr size_t kFiberStackBytes = 256 * 1024;

struct BarrierSite {  // where a thread waits: a barrier is one place in the code
  const char* file = nullptr;
  int line = 0;
  bool operator==(const BarrierSite& o) const {
    return line == o.line && std::strcmp(file, o.file) == 0;
  }
};

struct Fiber {
  ucontext_t context{};
  std::unique_ptr<char[]> stack;
  Dim3 index;
  bool done = false;
  BarrierSite waiting_at;
};

struct Launch {
  ucontext_t scheduler{};
  std::vector<Fiber> fibers;
  size_t running = 0;
  std::function<void()> body;
  std::vector<unsigned char> shared;
  std::exception_ptr error;  // thrown inside a thread, rethrown by launch()
};
inline Launch* active = nullptr;

inline void fiber_entry() {
  try {
    active->body();
  } catch (...) {
    if (!active->error) active->error = std::current_exception();
  }
  active->fibers[active->running].done = true;  // then uc_link resumes the scheduler
}

inline Dim3 unflatten(size_t i, const Dim3& d) {
  return Dim3(unsigned(i % d.x), unsigned(i / d.x % d.y), unsigned(i / (size_t(d.x) * d.y)));
}

// The order threads run in during one round (between two barriers): forward, backward and
// shuffled in turn, so that a missing barrier shows as a wrong result whichever thread
// would have to run first. Seeded: every run repeats.
inline void order_for_round(std::vector<size_t>& order, size_t block, size_t round) {
  for (size_t t = 0; t < order.size(); ++t) order[t] = t;
  const size_t turn = (block + round) % 3;  // blocks start in different orders too
  if (turn == 1) {
    std::reverse(order.begin(), order.end());
  } else if (turn == 2) {
    std::mt19937 rng(unsigned(block * 7919 + round));
    std::shuffle(order.begin(), order.end(), rng);
  }
}

}  // namespace detail

inline void syncthreads(const char* file, int line) {
  detail::Launch* launch = detail::active;
  if (launch == nullptr) throw std::logic_error("__syncthreads() outside an emulated launch");
  detail::Fiber& fiber = launch->fibers[launch->running];
  fiber.waiting_at = {file, line};
  swapcontext(&fiber.context, &launch->scheduler);
}

inline unsigned char* dynamic_shared_memory() { return detail::active->shared.data(); }

// kernel<<<grid, block, shared_bytes>>>(args...), run on this thread.
template <typename Kernel, typename... Args>
void launch(Dim3 grid, Dim3 block, size_t shared_bytes, Kernel kernel, Args... args) {
  if (block.volume() == 0 || block.volume() > 1024) {
    throw std::invalid_argument("emulated launch: a block holds 1 to 1024 threads");
  }
  if (grid.volume() == 0 || grid.y > 65535 || grid.z > 65535) {
    throw std::invalid_argument("emulated launch: grid must be non-empty, y and z <= 65535");
  }
  if (shared_bytes > 227 * 1024) {
    throw std::invalid_argument("emulated launch: more shared memory than any GPU allows");
  }
  detail::Launch launch;
  launch.body = [&] { kernel(args...); };
  launch.fibers.resize(block.volume());
  for (detail::Fiber& fiber : launch.fibers) {
    fiber.stack.reset(new char[detail::kFiberStackBytes]);
  }
  // Exactly the requested size (at least a byte), so AddressSanitizer sees an overrun.
  launch.shared.resize(std::max<size_t>(shared_bytes, 1));
  struct Restore {  // also when a barrier error throws
    detail::Launch* previous = detail::active;
    ~Restore() { detail::active = previous; }
  } restore;
  detail::active = &launch;
  current.grid_dim = grid;
  current.block_dim = block;
  std::vector<size_t> order(launch.fibers.size());
  for (size_t b = 0; b < grid.volume(); ++b) {
    current.block_idx = detail::unflatten(b, grid);
    std::memset(launch.shared.data(), 0xFF, launch.shared.size());
    for (size_t t = 0; t < launch.fibers.size(); ++t) {
      detail::Fiber& fiber = launch.fibers[t];
      getcontext(&fiber.context);
      fiber.context.uc_stack.ss_sp = fiber.stack.get();
      fiber.context.uc_stack.ss_size = detail::kFiberStackBytes;
      fiber.context.uc_link = &launch.scheduler;
      makecontext(&fiber.context, detail::fiber_entry, 0);
      fiber.index = detail::unflatten(t, block);
      fiber.done = false;
    }
    // Rounds: every waiting thread runs to its next barrier or its end.
    for (size_t round = 0;; ++round) {
      detail::order_for_round(order, b, round);
      for (const size_t t : order) {
        detail::Fiber& fiber = launch.fibers[t];
        if (fiber.done) continue;
        launch.running = t;
        current.thread_idx = fiber.index;
        swapcontext(&launch.scheduler, &fiber.context);
      }
      if (launch.error) std::rethrow_exception(launch.error);
      size_t done = 0;
      for (const detail::Fiber& fiber : launch.fibers) done += fiber.done ? 1 : 0;
      if (done == launch.fibers.size()) break;
      if (done > 0) {
        throw std::logic_error("emulated launch: __syncthreads() reached by " +
                               std::to_string(launch.fibers.size() - done) + " of " +
                               std::to_string(launch.fibers.size()) + " threads of block " +
                               std::to_string(b));
      }
      for (const detail::Fiber& fiber : launch.fibers) {
        if (!(fiber.waiting_at == launch.fibers[0].waiting_at)) {
          throw std::logic_error(
              std::string("emulated launch: threads of block ") + std::to_string(b) +
              " wait at different barriers: " + launch.fibers[0].waiting_at.file + ":" +
              std::to_string(launch.fibers[0].waiting_at.line) + " and " +
              fiber.waiting_at.file + ":" + std::to_string(fiber.waiting_at.line));
        }
      }
    }
  }
}

}  // namespace tsc_emulation

// CUDA's spellings, for the kernel headers.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one block at a time; not poisoned, unlike dynamic shared memory
#define threadIdx (::tsc_emulation::current.thread_idx)
#define blockIdx (::tsc_emulation::current.block_idx)
#define blockDim (::tsc_emulation::current.block_dim)
#define gridDim (::tsc_emulation::current.grid_dim)
#define __syncthreads() ::tsc_emulation::syncthreads(__FILE__, __LINE__)
#define TSC_DYNAMIC_SHARED_MEMORY(name) \
  unsigned char* name = ::tsc_emulation::dynamic_shared_memory()

// Device code's min and max for two values of one type.
template <typename T>
inline T min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
inline T max(T a, T b) {
  return a < b ? b : a;
}

// atomicAdd: threads never run at the same time here, so a plain read-modify-write.
template <typename T>
inline T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

