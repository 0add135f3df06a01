"""GPU probe: times sparse_filter_conv2d's CUDA methods against cuDNN on ResNet-50's 3x3 layers.

    python scripts/gpu/probe_sparse_filter.py [batch] [methods...]
Checks every output against cuDNN (float64 reference) first; prints ms per call (CUDA events,
median of 20 after warm-up)."""
import sys

import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc
from cuda_timing import median_ms

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 64
methods = sys.argv[2:] or ["direct", "auto"]
torch.manual_seed(0)


def ms(fn, reps=20):
    return median_ms(fn, reps, warmup=3)


print(torch.cuda.get_device_name(), "torch", torch.__version__, "tf32 conv",
      torch.backends.cudnn.allow_tf32)
print("layer sparsity dense_ms " + " ".join(methods))
for c, s in [(64, 56), (128, 28), (256, 14), (512, 7)]:
    x = torch.randn(batch, c, s, s, device="cuda")
    for sp in (0.8, 0.9, 0.95, 0.98):
        w = torch.randn(c, c, 3, 3, device="cuda") * (torch.rand(c, c, 3, 3, device="cuda") >= sp)
        rp, ci, v = tsc.pack_sparse_filter(w)
        ref = F.conv2d(x.double(), w.double(), padding=1)
        dense = ms(lambda: F.conv2d(x, w, padding=1))
        cells = []
        for m in methods:
            fn = lambda: tsc.sparse_conv2d_packed(x, rp, ci, v, list(w.shape), None, [1, 1],
                                                  [1, 1], [0, 0], [1, 1], 1, m)
            try:
                err = ((fn().double() - ref).norm() / ref.norm()).item()
                assert err < 1e-3, f"{m}: relative error {err}"
                cells.append(f"{m}={ms(fn):.3f}ms({dense / ms(fn):.2f}x)")
            except RuntimeError as e:
                cells.append(f"{m}=n/a({str(e).splitlines()[0][:40]})")
        print(f"{c}x{s} {sp:.2f} {dense:.3f} " + " ".join(cells), flush=True)
