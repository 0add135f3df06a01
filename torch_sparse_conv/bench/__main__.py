"""python -m torch_sparse_conv.bench: benchmarks of torch_sparse_conv against its peers.

    python -m torch_sparse_conv.bench [run] [--suite SUITE|all] [--threads 2]
        [--device cpu|cuda] [--quick] [--batch N] [--rounds N] [--out bench_results]
        [--no-plots]
    python -m torch_sparse_conv.bench report RESULT.json... [--update BENCHMARKS.md] [--plots DIR]
    python -m torch_sparse_conv.bench plot RESULT.json... [--out DIR]

run writes <out>/<suite>-<device>.json (everything measured), <out>/<suite>-<device>.md and,
when matplotlib is installed, <out>/plots-<device>/*.png, and prints the Markdown. report
turns result JSONs into BENCHMARKS.md sections (replacing the ones it wrote before); plot
redraws the PNGs. The suites: sparse-filter, ResNet-50's 3x3 layers at batch 8 over a
sparsity sweep (bench/sparse_filter.py); sparse-filter-batch1, sparse-filter-1x1 and
sparse-filter-stride2, the same cells on batch 1 and on the 1x1 and stride-2 layers
(bench/sparse_filter_layers.py); sparse-filter-train, a training step (forward and both
gradients) on those layers against dense nn.Conv2d's (bench/sparse_filter_train.py);
resnet50, the whole pruned model sparsified against dense
torch (bench/resnet50.py; needs torchvision); resnet18-train, SGD steps on the whole pruned
ResNet-18 against the masked dense model and its torch.compile (bench/resnet18_train.py);
toeplitz, the sparse-input grid and sweeps
(bench/toeplitz.py); roi, events and lidar, the sparse-input conv on generated ROI
footprints, event-camera frames and LiDAR grids (bench/toeplitz_workloads.py).

The sparse-filter suites (``PIN_HEAP``) raise glibc malloc's mmap and trim thresholds before
they run (bench/machine.py: fresh output pages otherwise cost some calls more than the
convolution) and time DeepSparse as a peer where scripts/setup_deepsparse.sh made its venv
(bench/deepsparse_peer.py). The setting stays for the rest of the process, so ``--suite all``
runs the sparse-input suites, which measure writes into fresh memory, first.

Libraries, not hand-written helpers: argparse for the command line, tqdm for the progress bar
(on stderr; it replaced a bar of our own). timing.py says what times the calls, and why.
"""
import argparse
import datetime
import json
import os
import platform
import sys

import torch

try:
    from tqdm import tqdm
except ImportError as error:  # requirements-dev.txt and the package's "bench" extra have it
    raise ImportError("python -m torch_sparse_conv.bench needs tqdm: pip install -r "
                      "requirements-dev.txt, or torch_sparse_conv[bench]") from error

from .._library import conv_block_vector_bytes, cpu_auto_rule
from . import machine as machine_info
from . import plots, report

SUITES = report.SUITES


def _version(module_name: str):
    try:
        module = __import__(module_name)
    except ImportError:
        return None
    return getattr(module, "__version__", "?")


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
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(),
                    default_cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    default_matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    if device == "cpu":
        info["peak"] = machine_info.cpu_peak(torch.get_num_threads())
        info["auto_rule"] = cpu_auto_rule()
        info["conv_block_bytes"] = conv_block_vector_bytes()
    versions = {name: _version(name) for name in
                ("numpy", "scipy", "sparse_convolution", "numba", "matplotlib")}
    info["versions"] = {name: v for name, v in versions.items() if v is not None}
    return info


def _plot(result: dict, directory: str) -> list:
    if not plots.available():
        print("matplotlib is not installed: no plots (pip install -r requirements-dev.txt)",
              file=sys.stderr)
        return []
    return plots.make(result, directory)


def progress_bar(total: int, label: str, stream=None) -> tqdm:
    """tqdm's bar over a suite's cells on stderr: count, elapsed, estimate of what is left (from
    the mean time per cell so far: cells differ too much for a moving average) and the last
    cell. On a terminal it redraws one line; into a file or pipe it writes one update per cell,
    separated by carriage returns (tqdm's way)."""
    return tqdm(total=total, desc=label, unit="cell", smoothing=0, mininterval=0,
                dynamic_ncols=True, file=sys.stderr if stream is None else stream)


def _step(bar: tqdm, text: str) -> None:
    bar.set_postfix_str(text, refresh=False)
    bar.update()


def suite_order(names: list) -> list:
    """``names`` with the suites that pin the heap last (the setting cannot be undone, and
    the sparse-input suites measure writes into fresh memory)."""
    return sorted(names, key=lambda name: bool(getattr(SUITES[name], "PIN_HEAP", False)))


def run(args) -> None:
    names = suite_order(list(SUITES)) if args.suite == "all" else [args.suite]
    runnable = []
    for name in names:
        why = getattr(SUITES[name], "unavailable", lambda: None)()
        if why and args.suite != "all":
            raise SystemExit(why)
        if why:
            print(f"skipping suite {name}: {why}", file=sys.stderr)
        else:
            runnable.append(name)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    os.makedirs(args.out, exist_ok=True)
    machine = machine_description(args.device)
    print(f"# machine: {json.dumps(machine)}", file=sys.stderr)
    command = "python -m torch_sparse_conv.bench " + " ".join(args.argv)
    for name in runnable:
        module = SUITES[name]
        heap = (machine_info.pin_heap() if getattr(module, "PIN_HEAP", False)
                else machine_info.heap_state())
        config = module.default_config(args.quick, args.device, args.batch, args.rounds)
        with progress_bar(module.cells(config), name) as bar:
            rows = module.run(config, device=args.device,
                              progress=lambda row: _step(bar, module.describe(row)))
        result = dict(suite=name, device=args.device, command=command, machine=machine,
                      date=datetime.datetime.now(datetime.timezone.utc).isoformat(
                          timespec="seconds"),
                      config=config, heap=heap, rows=rows, summary=module.summarize(rows))
        stem = os.path.join(args.out, f"{name}-{args.device}")
        with open(stem + ".json", "w") as f:
            json.dump(result, f, indent=1)
        drawn = [] if args.no_plots else _plot(result, os.path.join(args.out,
                                                                    f"plots-{args.device}"))
        text = report.section(result, drawn, relative_to=args.out)
        with open(stem + ".md", "w") as f:
            f.write(text)
        print("\n" + text)
        print(f"wrote {stem}.json, {stem}.md" + "".join(f", {p}" for p in drawn),
              file=sys.stderr)


def _load(path: str) -> dict:
    try:
        return report.load(path)
    except (OSError, ValueError) as error:
        raise SystemExit(str(error))


def report_command(args) -> None:
    relative_to = os.path.dirname(os.path.abspath(args.update)) if args.update else os.getcwd()
    for path in args.results:
        result = _load(path)
        directory = args.plots or os.path.join(os.path.dirname(path) or ".",
                                               f"plots-{result.get('device', 'cpu')}")
        drawn = [os.path.abspath(p) for p in _plot(result, directory)]
        text = report.section(result, drawn, relative_to=relative_to, compact=not args.full)
        if args.update:
            replaced = report.update(args.update, result, text)
            print(f"{'replaced' if replaced else 'appended'} {' '.join(report.markers(result))}"
                  f" section in {args.update}", file=sys.stderr)
        else:
            print(text)


def plot_command(args) -> None:
    for path in args.results:
        result = _load(path)
        directory = args.out or os.path.join(os.path.dirname(path) or ".",
                                             f"plots-{result.get('device', 'cpu')}")
        for drawn in _plot(result, directory):
            print(drawn)


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(prog="python -m torch_sparse_conv.bench",
                                          description=__doc__.split("\n\n")[0])
    commands = main_parser.add_subparsers(dest="command")
    run_parser = commands.add_parser("run", help="measure (the default command)")
    run_parser.add_argument("--suite", default="all", choices=["all", *SUITES])
    run_parser.add_argument("--threads", type=int, default=2)
    run_parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    run_parser.add_argument("--batch", type=int, default=None,
                            help="sparse-filter suites' batch (default 8 on CPU, 64 on CUDA; "
                                 "batch1 1; resnet50 both 1 and 8; sparse-filter-train 8 "
                                 "and 32; resnet18-train 16)")
    run_parser.add_argument("--quick", action="store_true",
                            help="a few cells and rounds: a smoke test, not numbers to quote")
    run_parser.add_argument("--rounds", type=int, default=None,
                            help="interleaved rounds per cell (default 15 sparse-filter*, "
                                 "10 resnet50, 20 SGD steps resnet18-train, 5 toeplitz, roi, "
                                 "events and lidar; fewer with --quick)")
    run_parser.add_argument("--out", default="bench_results")
    run_parser.add_argument("--no-plots", action="store_true")
    report_parser = commands.add_parser("report", help="Markdown sections from result JSONs")
    report_parser.add_argument("results", nargs="+")
    report_parser.add_argument("--update", metavar="MARKDOWN",
                               help="replace (or append) the generated sections in this file")
    report_parser.add_argument("--full", action="store_true",
                               help="a column for every contender (default: compact tables)")
    report_parser.add_argument("--plots", metavar="DIR",
                               help="where to draw the PNGs (default: beside the JSON)")
    plot_parser = commands.add_parser("plot", help="PNG plots from result JSONs")
    plot_parser.add_argument("results", nargs="+")
    plot_parser.add_argument("--out", metavar="DIR")
    return main_parser


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "report", "plot", "-h", "--help"):
        argv = ["run"] + argv  # `python -m torch_sparse_conv.bench --quick` still runs
    args = parser().parse_args(argv)
    args.argv = argv[1:] if argv[0] == "run" else argv
    {"run": run, "report": report_command, "plot": plot_command}[args.command](args)


if __name__ == "__main__":
    main()
