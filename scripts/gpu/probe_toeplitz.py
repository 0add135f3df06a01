"""GPU probe: toeplitz_conv2d on CUDA against sparse_convolution's torch backend on the GPU.

    python scripts/gpu/probe_toeplitz.py
Ours is timed on CUDA CSR tensors (CUDA events, median); 'ours+io' adds the copies from and
to scipy CSR on the host, like for like with sparse_convolution, whose calls take and return
host scipy matrices. Every output is checked against the CPU kernel first."""
import time

import numpy as np
import scipy.sparse
import torch

import torch_sparse_conv as tsc
from cuda_timing import median_ms

try:
    import sparse_convolution as sc
except ImportError:
    sc = None


def cuda_ms(fn, reps=10):
    return median_ms(fn, reps, warmup=2)


def wall_ms(fn, reps=5):
    fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize(); t = time.perf_counter(); fn(); torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


print(torch.cuda.get_device_name(), "torch", torch.__version__, "sparse_convolution",
      getattr(sc, "__version__", "missing"))
rng = np.random.default_rng(0)
CELLS = [((100, 100), k, b, d) for k in (5, 11) for b in (50, 500) for d in (0.001, 0.01, 0.1)]
CELLS += [((512, 512), 5, 500, 0.01), ((512, 512), 11, 500, 0.01), ((512, 512), 5, 2000, 0.05)]
for (h, w), k, batch, density in CELLS:
            if True:
                x = scipy.sparse.random(batch, h * w, density, format="csr", random_state=rng)
                kernel = rng.standard_normal((k, k))
                xt = torch.sparse_csr_tensor(torch.from_numpy(x.indptr).long().cuda(),
                                             torch.from_numpy(x.indices).long().cuda(),
                                             torch.from_numpy(x.data).cuda(), size=x.shape)
                kt = torch.from_numpy(kernel).cuda()
                row = f"{h}x{w} k{k} b{batch} d{density}"
                ref = tsc.toeplitz_conv2d(xt.cpu() if False else torch.sparse_csr_tensor(
                    torch.from_numpy(x.indptr).long(), torch.from_numpy(x.indices).long(),
                    torch.from_numpy(x.data), size=x.shape), torch.from_numpy(kernel), (h, w),
                    "same")
                cells = {}
                for method in ("direct", "precomputed"):
                    fn = lambda: tsc.toeplitz_conv2d(xt, kt, (h, w), "same", method=method)
                    out = fn()
                    err = (out.to_dense().cpu() - ref.to_dense()).abs().max().item()
                    assert err < 1e-9, (row, method, err)
                    cells[method] = cuda_ms(fn)
                out = tsc.toeplitz_conv2d(xt, kt, (h, w), "same")
                moved = (x.nnz * 16 + out.values().numel() * 16) / 1e9
                cells["GB/s(direct)"] = moved / (cells["direct"] / 1e3)

                def with_io():
                    xi = torch.sparse_csr_tensor(torch.from_numpy(x.indptr).long().cuda(),
                                                 torch.from_numpy(x.indices).long().cuda(),
                                                 torch.from_numpy(x.data).cuda(), size=x.shape)
                    o = tsc.toeplitz_conv2d(xi, kt, (h, w), "same")
                    return scipy.sparse.csr_matrix((o.values().cpu().numpy(),
                                                    o.col_indices().cpu().numpy(),
                                                    o.crow_indices().cpu().numpy()),
                                                   shape=o.shape)
                cells["ours+io"] = wall_ms(with_io)
                if sc is not None:
                    for m in ("precomputed", "lazy", "gather_scatter")[h > 100:]:
                        try:
                            conv = sc.Toeplitz_convolution2d((h, w), kernel, mode="same",
                                                             method=m, backend="torch",
                                                             device="cuda")
                            theirs = conv(x)
                            got = theirs.toarray() if scipy.sparse.issparse(theirs) else \
                                np.asarray(theirs)
                            assert np.allclose(got, ref.to_dense().numpy(), atol=1e-8), m
                            cells[f"sc-{m}"] = wall_ms(lambda: conv(x))
                        except Exception as e:  # noqa: BLE001 - report, keep going
                            cells[f"sc-{m}"] = f"fail:{type(e).__name__}"
                best = min((v for key, v in cells.items() if key.startswith("sc-")
                            and isinstance(v, float)), default=float("nan"))
                print(row, " ".join(f"{key}={v:.3f}" if isinstance(v, float) else f"{key}={v}"
                                    for key, v in cells.items()),
                      f"| vs best sc: native {best / cells['direct']:.1f}x, "
                      f"with io {best / cells['ours+io']:.1f}x", flush=True)
