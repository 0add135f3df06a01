"""Scale-out: DDP and FSDP2 (fully_shard) train a model with SparseConv2d layers on 2 CPU
processes (gloo, 127.0.0.1) exactly as one process trains it on the whole batch: the ops are
ordinary autograd ops, nothing of ours is distributed-specific."""
import socket

import pytest
import torch

from testing import ROOT, run_python

SCRIPT = ROOT / "tests" / "common" / "distributed_training.py"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_two_process_training_matches_one_process(kind, tmp_path):
    result = run_python(str(SCRIPT), kind, str(tmp_path), timeout=600,
                        TSC_TEST_PORT=_free_port(), OMP_NUM_THREADS="1")
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
    single = torch.load(tmp_path / "single.pt")
    initial = torch.load(tmp_path / "initial.pt")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for rank in ranks:
        torch.testing.assert_close(rank["losses"], single["losses"], rtol=1e-5, atol=1e-6)
        assert rank["params"].keys() == single["params"].keys()
        for name, value in single["params"].items():
            torch.testing.assert_close(rank["params"][name], value, rtol=1e-5, atol=1e-6)
            assert torch.equal(rank["params"][name], ranks[0]["params"][name])  # in step
        # Pruned taps stay pruned: every rank keeps the initial pattern.
        for name, (row_ptr, col_idx) in initial["patterns"].items():
            assert torch.equal(rank["patterns"][name][0], row_ptr)
            assert torch.equal(rank["patterns"][name][1], col_idx)
    assert len(initial["patterns"]) == 2
