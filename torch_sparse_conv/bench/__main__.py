"""python -m torch_sparse_conv.bench: benchmarks of torch_sparse_conv against its peers.

    python -m torch_sparse_conv.bench [--suite sparse-filter|toeplitz|all] [--threads 2]
                                      [--device cpu|cuda] [--quick] [--out bench_results]

Writes <out>/<suite>.json and <out>/<suite>.md and prints the Markdown table.
"""
import argparse
import json
import os
import platform
import sys

import torch

from . import sparse_filter, toeplitz

SUITES = {"sparse-filter": sparse_filter, "toeplitz": toeplitz}


def machine_description(device: str) -> dict:
    info = dict(python=platform.python_version(), torch=torch.__version__,
                threads=torch.get_num_threads(), processor=platform.processor() or "unknown",
                cpu_capability=torch.backends.cpu.get_cpu_capability(),
                machine=platform.machine(), cores=os.cpu_count())
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    info["processor"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="all", choices=["all", *SUITES])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="a few cells, for a smoke test")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default="bench_results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    os.makedirs(args.out, exist_ok=True)
    machine = machine_description(args.device)
    print(f"# machine: {json.dumps(machine)}")
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    for name in suites:
        module = SUITES[name]
        batch = args.batch or (8 if args.device == "cpu" else 64)

        def progress(row):
            fastest = min(row["seconds"], key=row["seconds"].get)
            label = row.get("layer", "") + (f" sparsity {row['sparsity']:.0%}"
                                            if "sparsity" in row else row.get("cell", ""))
            print(f"  {label}: fastest {fastest} {row['seconds'][fastest] * 1e3:.3g} ms",
                  file=sys.stderr, flush=True)

        rows = module.run(batch=batch, device=args.device, quick=args.quick,
                          rounds=args.rounds, progress=progress)
        table = module.markdown(rows)
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump(dict(suite=name, machine=machine, batch=batch, rows=rows,
                           summary={str(k): v for k, v in module.summarize(rows).items()}),
                      f, indent=1)
        with open(os.path.join(args.out, f"{name}.md"), "w") as f:
            f.write(table + "\n")
        print(f"\n## {name} (batch {batch}, {args.threads} threads, {args.device})\n")
        print(table)


if __name__ == "__main__":
    main()
