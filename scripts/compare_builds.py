"""Times the same cells with two builds of torch_sparse_conv, side by side.

    python scripts/compare_builds.py --a /path/to/other/checkout --b . [--rounds 7] [--threads 2]

Each checkout must hold a built extension (`python setup.py build_ext --inplace`). A build is
loaded once per process, so every round starts one worker process per build, in alternating
order (a, b, b, a, ...); each worker times every cell (median of its repetitions) and the
report gives, per cell, the median over rounds of each build and the ratio b / a. Medians of
interleaved rounds, as the noisy shared machine needs. Cells whose name starts with "env:"
run with extra environment settings (e.g. the output cache turned off) in both builds.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r'''
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
import torch_sparse_conv as tsc
assert tsc.__file__.startswith(sys.argv[2]), (tsc.__file__, sys.argv[2])

def median_time(fn, reps):
    fn(); fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]

def filter_cell(channels, size, batch, sparsity, method):
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.mul_(torch.rand(conv.weight.shape, generator=gen) >= sparsity)
    layer = tsc.SparseConv2d.from_dense(conv, method=method)
    x = torch.randn(batch, channels, size, size, generator=gen)
    def run():
        with torch.no_grad():
            layer(x)
    return run

def toeplitz_cell(size, batch, density, kernel_size, kept):
    gen = torch.Generator().manual_seed(0)
    dense = torch.rand(batch, size * size, generator=gen, dtype=torch.float64)
    x = (dense * (dense < density)).to_sparse_csr()
    kernel = torch.rand(kernel_size, kernel_size, generator=gen, dtype=torch.float64)
    module = tsc.ToeplitzConv2d((size, size), kernel, mode="same", method="precomputed")
    if kept:
        return lambda: module(x)
    return lambda: tsc.toeplitz_conv2d(x, kernel, (size, size), "same", "precomputed")

def toeplitz_direct_cell(size, batch, density, kernel_size):
    gen = torch.Generator().manual_seed(0)
    dense = torch.rand(batch, size * size, generator=gen, dtype=torch.float64)
    x = (dense * (dense < density)).to_sparse_csr()
    kernel = torch.rand(kernel_size, kernel_size, generator=gen, dtype=torch.float64)
    return lambda: tsc.toeplitz_conv2d(x, kernel, (size, size), "same", "direct")

results = {}
for name, spec, reps in json.loads(sys.argv[3]):
    kind, args = spec[0], spec[1:]
    fn = {"filter": filter_cell, "toeplitz": toeplitz_cell,
          "toeplitz_direct": toeplitz_direct_cell}[kind](*args)
    results[name] = median_time(fn, reps)
print(json.dumps(results))
'''

# name -> (kind, arguments..., repetitions). ResNet-50's 3x3 layers, random unstructured masks.
CELLS = [
    ("512@7 b1 90% direct", ("filter", 512, 7, 1, 0.9, "direct"), 30),
    ("512@7 b1 90% auto", ("filter", 512, 7, 1, 0.9, "auto"), 30),
    ("512@7 b1 50% dense", ("filter", 512, 7, 1, 0.5, "dense"), 30),
    ("512@7 b8 90% auto", ("filter", 512, 7, 8, 0.9, "auto"), 15),
    ("256@14 b1 90% auto", ("filter", 256, 14, 1, 0.9, "auto"), 30),
    ("128@28 b1 95% auto", ("filter", 128, 28, 1, 0.95, "auto"), 30),
    ("128@28 b8 50% dense", ("filter", 128, 28, 8, 0.5, "dense"), 10),
    ("64@56 b8 90% auto", ("filter", 64, 56, 8, 0.9, "auto"), 10),
    ("64@56 b8 90% unfold", ("filter", 64, 56, 8, 0.9, "unfold"), 10),
    ("T kept: 100x100 b50 d0.01 5x5", ("toeplitz", 100, 50, 0.01, 5, True), 30),
    ("T per call: 100x100 b50 d0.01 5x5", ("toeplitz", 100, 50, 0.01, 5, False), 30),
    ("direct 100x100 b500 d0.1 5x5", ("toeplitz_direct", 100, 500, 0.1, 5), 10),
    ("direct 50x50 b1 d0.01 5x5", ("toeplitz_direct", 50, 1, 0.01, 5), 200),
    ("direct 512x512 b50 d0.01 11x11", ("toeplitz_direct", 512, 50, 0.01, 11), 5),
    ("env:TSC_OUTPUT_CACHE_MB=0 direct 100x100 b500 d0.1 5x5",
     ("toeplitz_direct", 100, 500, 0.1, 5), 10),
]


def run_worker(checkout, threads, cells, env_extra):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout), **env_extra)
    out = subprocess.run([sys.executable, "-c", WORKER, str(threads),
                          os.path.abspath(checkout), json.dumps(cells)],
                         capture_output=True, text=True, env=env, check=True,
                         cwd=os.path.abspath(checkout))  # -c puts the cwd first on sys.path
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="checkout of the baseline build")
    parser.add_argument("--b", required=True, help="checkout of the build compared with it")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    plain = [[name, spec, reps] for name, spec, reps in CELLS if not name.startswith("env:")]
    with_env = {}
    for name, spec, reps in CELLS:
        if name.startswith("env:"):
            setting = name.split()[0][4:]
            key, value = setting.split("=")
            with_env.setdefault((key, value), []).append([name, spec, reps])
    times = {"a": {}, "b": {}}
    for round_index in range(args.rounds):
        order = ["a", "b"] if round_index % 2 == 0 else ["b", "a"]
        for side in order:
            checkout = args.a if side == "a" else args.b
            batches = [(plain, {})] + [(cells, {k: v}) for (k, v), cells in with_env.items()]
            for cells, env_extra in batches:
                for name, seconds in run_worker(checkout, args.threads, cells, env_extra).items():
                    times[side].setdefault(name, []).append(seconds)
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
    print(f"| cell | a (ms) | b (ms) | b / a |\n|---|---|---|---|")
    for name, _, _ in CELLS:
        a = statistics.median(times["a"][name]) * 1e3
        b = statistics.median(times["b"][name]) * 1e3
        print(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
