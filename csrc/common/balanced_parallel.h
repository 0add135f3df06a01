// A parallel loop over tasks that balances where the threads run at different speeds.
//
// at::parallel_for (OpenMP) gives each thread a fixed contiguous share, so a region lasts as
// long as its slowest thread. On the 2-vCPU VMs this project is measured on the two threads
// often ran one layer's equal shares at different speeds: the lanes forward of 512x7x7 at 95 %,
// batch 8, spent 974 against 1299 us in its two halves, 256x14x14 1431 against 1557 us, in
// either direction from one run to the next (equal work: the same taps a channel on average).
// parallel_tasks starts each thread on the share at::parallel_for would give it, in order (so
// the data a thread laid out for its tasks is still its own where the split matches), and
// lets a thread that finishes take the last tasks left in another's share.
//
// Which thread runs a task changes nothing in its result: callers' tasks write disjoint
// outputs in an order of their own.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>

#include "csrc/common/arithmetic.h"

namespace torch_sparse_conv {
namespace balanced_detail {

// A share of tasks [first, last) that its owner takes from the front and others from the
// back, both as one compare-and-swap of the pair (first in the low half, last in the high).
struct alignas(64) Share {
  std::atomic<uint64_t> bounds{0};

  void set(uint32_t first, uint32_t last) {
    bounds.store(uint64_t(last) << 32 | first, std::memory_order_relaxed);
  }
  // Claims the share's first task (front) or last (back) into `task`; false when none is left.
  bool claim(bool front, int64_t& task) {
    uint64_t seen = bounds.load(std::memory_order_relaxed);
    for (;;) {
      const uint32_t first = uint32_t(seen), last = uint32_t(seen >> 32);
      if (first >= last) return false;
      const uint64_t next = front ? uint64_t(last) << 32 | (first + 1)
                                  : uint64_t(last - 1) << 32 | first;
      if (bounds.compare_exchange_weak(seen, next, std::memory_order_relaxed)) {
        task = front ? first : last - 1;
        return true;
      }
    }
  }
};

}  // namespace balanced_detail

// Calls task(t) once for each t in [0, tasks), in parallel; see above. Thread `i` of
// at::parallel_for's team starts on [i * c, (i + 1) * c), c = ceil(tasks / threads) (the
// share at::parallel_for(0, tasks, 1, ...) gives it), in order, then takes tasks from the
// ends of the other shares, the one with the most left first. Runs inline in a parallel
// region or with one thread.
template <typename Task>
void parallel_tasks(int64_t tasks, const Task& task) {
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), tasks);
  if (threads <= 1 || at::in_parallel_region() ||
      tasks > int64_t(std::numeric_limits<uint32_t>::max())) {
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) task(t);
    });
    return;
  }
  const int64_t per_share = ceil_div(tasks, threads);
  const int64_t shares = ceil_div(tasks, per_share);
  auto share = std::make_unique<balanced_detail::Share[]>(shares);
  for (int64_t s = 0; s < shares; ++s) {
    share[s].set(uint32_t(s * per_share), uint32_t(std::min(tasks, (s + 1) * per_share)));
  }
  at::parallel_for(0, shares, 1, [&](int64_t begin, int64_t end) {
    int64_t t;
    for (int64_t s = begin; s < end; ++s) {
      while (share[s].claim(/*front=*/true, t)) task(t);
    }
    // Then the others' last tasks, from the share with the most left.
    for (;;) {
      int64_t victim = -1, most = 0;
      for (int64_t s = 0; s < shares; ++s) {
        const uint64_t b = share[s].bounds.load(std::memory_order_relaxed);
        const int64_t left = int64_t(uint32_t(b >> 32)) - int64_t(uint32_t(b));
        if (left > most) most = left, victim = s;
      }
      if (victim < 0) return;
      if (share[victim].claim(/*front=*/false, t)) task(t);
    }
  });
}

// One T for each thread of at::parallel_for's team (or parallel_tasks'), each on cache lines of
// its own: the scratch a task takes from the thread that runs it, whichever that is.
template <typename T>
class PerThread {
 public:
  PerThread() : threads_(at::get_num_threads()), slots_(std::make_unique<Slot[]>(threads_)) {}
  // This thread's T (at::get_thread_num(): 0 outside a parallel region and where a
  // parallel_for runs inline).
  T& mine() {
    const int64_t thread = at::get_thread_num();
    TORCH_INTERNAL_ASSERT(thread >= 0 && thread < threads_);
    return slots_[thread].value;
  }

 private:
  struct alignas(64) Slot {
    T value;
  };
  int64_t threads_;
  std::unique_ptr<Slot[]> slots_;
};

}  // namespace torch_sparse_conv
