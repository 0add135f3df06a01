"""parallel_tasks (csrc/common/balanced_parallel.h), the loop the lanes kernels share their
tasks out with: every task runs exactly once on any thread count, each thread starts on the
share at::parallel_for would give it, and a thread that finishes early takes the other's last
tasks."""
import pytest
import torch

from torch_sparse_conv import _C


@pytest.fixture
def threads():
    """Restores the thread count a test changes."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("tasks", [0, 1, 2, 3, 7, 64, 1000])
def test_every_task_runs_once(threads, count, tasks):
    torch.set_num_threads(count)
    runs, ran_on = _C._parallel_tasks_trace(tasks, -1, 0)
    assert runs == [1] * tasks
    assert all(0 <= thread < count for thread in ran_on)


def test_a_slow_thread_leaves_its_last_tasks_to_the_other(threads):
    torch.set_num_threads(2)
    # Thread 1 sleeps 50 ms a task: thread 0 runs its own share (tasks 0-7, in order, from
    # the front) and then takes thread 1's from the back while thread 1 works on its first
    # (all but that one, unless thread 0 is kept off its core for most of 400 ms).
    runs, ran_on = _C._parallel_tasks_trace(16, 1, 50000)
    assert runs == [1] * 16
    assert ran_on[:8] == [0] * 8
    theirs = ran_on[8:]
    assert theirs.count(0) >= 1, ran_on
    # What thread 1 ran is the front of its share, what thread 0 took the back.
    ones = [t for t in range(8, 16) if ran_on[t] == 1]
    assert ones == list(range(8, 8 + len(ones)))
