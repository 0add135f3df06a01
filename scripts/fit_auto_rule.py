"""Measures and refits the CPU `auto` rule of sparse_filter_conv2d (csrc/sparse_filter/method.h).

    python scripts/fit_auto_rule.py [--sweeps 3] [--rounds 11] [--threads 2] [--out sweeps.json]
    python scripts/fit_auto_rule.py --from-json sweeps.json     # refit saved sweeps

Each sweep times `direct`, our `dense` and `auto` against F.conv2d (oneDNN) on ResNet-50's 3x3
layers (stride 1 and 2) and its 1x1 layers, densities 2-50 %, batch 1 and 8, in interleaved
rounds (medians); the fit takes the median of the sweeps per cell. The rule's form is
method.h's: `direct` costs density / efficiency + overhead of oneDNN's time per layout
(1x1 in place, the batch in the vector lanes, one sample at a time) and output-run class; a
stride scales the lanes layout's overhead by 1 + k (phases - 1) and each layout's efficiency
by a factor; our `dense` costs 1 + R (1 + D density) / (N H_out W_out)^P. The script prints
the fitted constants in method.h's terms, then how often picking by the old (method.h's
rules, read from the built extension: `_C._auto_rules()`) and the new constants lands more
than 5 % above the better of `direct` and `dense` on the sweeps. It does not edit method.h:
copy the constants in, rebuild, run the sweep again to check `auto`.

The backward's limits (kGradValues...MaxDensity) were measured by timing
_sparse_filter_conv2d_backward on a build with every limit set to 1.0 against
aten.convolution_backward's weight gradient (BENCHMARKS.md, eighteenth session).
Run with glibc's heap pinned, as the bench suites do:
MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647.
"""
import argparse
import json
import math
import statistics
import time
from collections import defaultdict

import numpy as np

# (name, C_in, C_out, kernel, size, stride)
LAYERS = [("64@56", 64, 64, 3, 56, 1), ("128@28", 128, 128, 3, 28, 1),
          ("256@14", 256, 256, 3, 14, 1), ("512@7", 512, 512, 3, 7, 1),
          ("128@56s2", 128, 128, 3, 56, 2), ("256@28s2", 256, 256, 3, 28, 2),
          ("512@14s2", 512, 512, 3, 14, 2),
          ("256->64@56", 256, 64, 1, 56, 1), ("64->256@56", 64, 256, 1, 56, 1),
          ("512->128@28", 512, 128, 1, 28, 1), ("128->512@28", 128, 512, 1, 28, 1),
          ("1024->256@14", 1024, 256, 1, 14, 1), ("256->1024@14", 256, 1024, 1, 14, 1),
          ("2048->512@7", 2048, 512, 1, 7, 1), ("512->2048@7", 512, 2048, 1, 7, 1)]
DENSITIES = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5]
BATCHES = [1, 8]
METHODS = ("direct", "dense", "auto")
RUN_CLASSES = {"pointwise": [512, 0], "lanes": [2048, 512, 128, 0], "one-sample": [2048, 512, 128, 0]}
LANES = 8             # float32 samples a vector block (lanes<float>() on AVX-512 and AVX2)
POINTWISE_TILE = 128  # float32 positions a 1x1 tile (simd.cpp: 8 vectors of 64 bytes)
NEAR_CROSSOVER = (0.6, 1.6)  # cells whose direct/dense ratio lies here weigh 3x in the fit


def compiled_rules() -> dict:
    """method.h's rules (AutoRule, by name), as the built extension holds them, to compare a
    refit against."""
    from torch_sparse_conv import _C
    return _C._auto_rules()


def sweep(rounds: int, seed: int = 0) -> list:
    """One sweep: per cell the medians of `direct`, `dense`, `auto` over F.conv2d's time."""
    import torch
    import torch.nn.functional as F
    import torch_sparse_conv as tsc
    op = torch.ops.torch_sparse_conv.sparse_filter_conv2d
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for name, cin, cout, k, size, stride in LAYERS:
        pad = k // 2
        for batch in BATCHES:
            x = torch.randn(batch, cin, size, size, generator=gen)
            for density in DENSITIES:
                w = torch.randn(cout, cin, k, k, generator=gen)
                w[torch.rand(w.shape, generator=gen) >= density] = 0
                rp, ci, v = tsc.pack_sparse_filter(w)
                calls = {"oneDNN": lambda: F.conv2d(x, w, stride=stride, padding=pad)}
                for m in METHODS:
                    calls[m] = (lambda m=m: op(x, rp, ci, v, list(w.shape), None, [stride] * 2,
                                               [pad] * 2, [1, 1], 1, m))
                for fn in calls.values():
                    fn()
                start = time.perf_counter()
                calls["oneDNN"]()
                reps = max(1, int(0.004 / max(time.perf_counter() - start, 1e-5)))
                times = defaultdict(list)
                for _ in range(rounds):
                    for key, fn in calls.items():
                        start = time.perf_counter()
                        for _ in range(reps):
                            fn()
                        times[key].append((time.perf_counter() - start) / reps)
                base = statistics.median(times["oneDNN"])
                row = dict(layer=name, k=k, size=size, stride=stride, batch=batch,
                           density=density, onednn_ms=base * 1e3)
                row.update({m: statistics.median(times[m]) / base for m in METHODS})
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def merge(sweeps: list) -> list:
    """Per cell, the median of each ratio over the sweeps."""
    cells = defaultdict(list)
    for rows in sweeps:
        for r in rows:
            cells[(r["layer"], r["batch"], r["density"])].append(r)
    merged = []
    for rs in cells.values():
        r = dict(rs[0])
        for m in METHODS:
            r[m] = statistics.median(x[m] for x in rs)
        merged.append(r)
    return merged


def classify(r: dict) -> dict:
    """The layout and output-run class method.cpp's rule puts a cell in (float32)."""
    pad = r["k"] // 2
    out = (r["size"] + 2 * pad - r["k"]) // r["stride"] + 1
    phase_w = -(-(r["size"] + 2 * pad) // r["stride"])
    wide = (out - 1) * phase_w + out
    batch = r["batch"]
    if r["k"] == 1 and out * out >= POINTWISE_TILE:
        kind = "pointwise"
    elif batch >= LANES and 8 * -(-batch // LANES) * LANES <= 9 * batch:
        kind = "lanes"
    else:
        kind = "one-sample"
    run = next(m for m in RUN_CLASSES[kind] if wide >= m)
    phases = 0 if r["k"] == 1 else r["stride"] ** 2 - 1  # a 1x1 kernel picks its pixels first
    return dict(kind=kind, run=run, outputs=batch * out * out, phases=phases)


def _weight(ratio: float) -> float:
    return 3.0 if NEAR_CROSSOVER[0] <= ratio <= NEAR_CROSSOVER[1] else 1.0


def fit(rows: list) -> dict:
    """method.h's constants fitted to merged sweep rows (see the module docstring)."""
    for r in rows:
        r.update(classify(r))
    models = defaultdict(dict)
    for kind, runs in RUN_CLASSES.items():
        for run in runs:
            cells = [r for r in rows if r["kind"] == kind and r["run"] == run and r["phases"] == 0]
            if len(cells) < 2:
                continue
            w = np.array([_weight(r["direct"]) for r in cells])
            a = np.array([[r["density"], 1.0] for r in cells]) * w[:, None]
            (slope, overhead), *_ = np.linalg.lstsq(a, np.array([r["direct"] for r in cells]) * w,
                                                    rcond=None)
            models[kind][run] = (1.0 / slope, overhead)
    stride = {}
    for kind in ("lanes", "one-sample"):
        cells = [r for r in rows if r["kind"] == kind and r["phases"] > 0 and r["run"] in models[kind]]
        best = (math.inf, 0.0, 1.0)
        # method.cpp scales only the lanes layout's overhead with the phases.
        for per_phase in np.arange(0.0, 1.501, 0.05) if kind == "lanes" else [0.0]:
            for eff in np.arange(0.6, 1.2001, 0.025):
                err = 0.0
                for r in cells:
                    e, o = models[kind][r["run"]]
                    pred = r["density"] / (e * eff) + o * (1 + r["phases"] * per_phase)
                    err += (_weight(r["direct"]) * (pred - r["direct"])) ** 2
                best = min(best, (err, per_phase, eff))
        stride[kind] = (best[1], best[2])
    best = (math.inf, None)
    y = np.array([r["dense"] - 1 for r in rows])
    for power in (0.5, 0.6, 0.75, 0.9, 1.0):
        for per_density in np.arange(0.0, 20.01, 0.5):
            x = np.array([(1 + per_density * r["density"]) / r["outputs"] ** power for r in rows])
            scale = float(x @ y / (x @ x))
            err = float(((scale * x - y) ** 2).sum())
            best = min(best, (err, (scale, per_density, power)), key=lambda b: b[0])
    return dict(models={k: dict(v) for k, v in models.items()}, stride=stride, dense=best[1])


def predicted(constants: dict, r: dict) -> tuple:
    """(direct, dense) time over oneDNN's as the rule with ``constants`` predicts them."""
    eff, overhead = constants["models"][r["kind"]][r["run"]]
    if r["phases"] and r["kind"] in constants["stride"]:
        per_phase, stride_eff = constants["stride"][r["kind"]]
        overhead *= 1 + r["phases"] * per_phase
        eff *= stride_eff
    scale, per_density, power = constants["dense"]
    return (r["density"] / eff + overhead,
            1 + scale * (1 + per_density * r["density"]) / r["outputs"] ** power)


def regret(constants: dict, rows: list, min_gain: float = 1.05) -> list:
    """Per cell: the measured time of the pick over the better of direct and dense."""
    out = []
    for r in rows:
        direct, dense = predicted(constants, r)
        pick = "direct" if dense / direct >= min_gain else "dense"
        out.append((r[pick] / min(r["direct"], r["dense"]), r, pick))
    return out


def report(constants: dict, rows: list) -> None:
    print("\nFitted (efficiency, overhead) per layout and output run (method.h):")
    for kind, runs in constants["models"].items():
        print(f"  {kind:10s} " + ", ".join(f"{{{run}, {e:.2f}, {o:.2f}}}"
                                         for run, (e, o) in sorted(runs.items(), reverse=True)))
    for kind, (per_phase, eff) in constants["stride"].items():
        print(f"  stride, {kind}: overhead x (1 + {per_phase:.2f} (phases - 1)), efficiency x {eff:.3f}")
    scale, per_density, power = constants["dense"]
    print(f"  dense: 1 + {scale:.2f} (1 + {per_density:.1f} density) / outputs^{power}")
    for name, c in [(f"method.h's {n} rule", r) for n, r in compiled_rules().items()] + [("refitted", constants)]:
        picks = regret(c, rows)
        worst = max(picks, key=lambda p: p[0])
        print(f"{name}: {sum(p[0] > 1.05 for p in picks)} of {len(picks)} cells more than 5 % "
              f"above the better method; worst {worst[0]:.2f}x ({worst[1]['layer']}, batch "
              f"{worst[1]['batch']}, density {worst[1]['density']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the sweeps' rows here (JSON)")
    parser.add_argument("--from-json", help="refit sweeps saved by --out instead of measuring")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            sweeps = json.load(f)
    else:
        import torch
        torch.set_num_threads(args.threads)
        sweeps = [sweep(args.rounds, seed=0) for _ in range(args.sweeps)]
        if args.out:
            with open(args.out, "w") as f:
                json.dump(sweeps, f)
    rows = merge(sweeps)
    report(fit(rows), rows)


if __name__ == "__main__":
    main()
