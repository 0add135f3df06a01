"""PNG plots of a benchmark result (matplotlib, imported only when a plot is drawn, so the
package and the benchmark itself work without it).

    sparse-filter-speedup.png   speedup over the baseline against sparsity, one panel a layer,
                                the crossover of ours:auto marked (sparse-filter-batch1 too)
    sparse-filter-1x1-speedup.png, sparse-filter-stride2-speedup.png,
    sparse-filter-train-speedup.png, resnet50-speedup.png
                                each cell's speedup over dense, every contender
    toeplitz-grid.png           the 36-cell grid: each cell's winner and our best speedup
    toeplitz-sweeps.png         time against batch, density, image size and kernel size
    roi-speedup.png, events-speedup.png, lidar-speedup.png
                                each workload cell's speedup over the bar, every contender
"""
import math
import os
from typing import Dict, List

from . import (resnet18_train, resnet50, sparse_filter, sparse_filter_layers,
               sparse_filter_train, toeplitz, toeplitz_workloads)


def available() -> bool:
    """Whether matplotlib can be imported here."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def _style(name: str, names: List[str]) -> Dict:
    """Ours solid and thick, peers dashed, so the two families read apart; one colour per
    contender, the same in every panel: ours from tab10, peers from tab20b."""
    import matplotlib
    family = [n for n in names if n.startswith("ours:") == name.startswith("ours:")]
    palette = "tab10" if name.startswith("ours:") else "tab20b"
    index = family.index(name)
    if palette == "tab20b":  # its colours come in 5 hues of 4 shades: step across the hues
        index = 4 * index + index // 5
    colour = matplotlib.colormaps[palette](index % (10 if palette == "tab10" else 20))
    if name.startswith("ours:"):
        return dict(color=colour, linestyle="-", linewidth=2.0, marker="o", markersize=4)
    return dict(color=colour, linestyle="--", linewidth=1.2, marker=".", markersize=4)


def _plain_log_ticks(axis, y_suffix: str = "") -> None:
    """Log axes labelled 0.5, 2, 100 rather than 5x10^-1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    for which, suffix in ((axis.xaxis, ""), (axis.yaxis, y_suffix)):
        if which.get_scale() != "log":
            continue
        which.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        which.set_major_formatter(FuncFormatter(lambda v, _, s=suffix: f"{v:g}{s}"))
        which.set_minor_formatter(NullFormatter())


def _legend_right(figure, axes) -> None:
    """One legend for the figure, right of the panels, with every contender once."""
    handles, labels = {}, []
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    figure.legend([handles[label] for label in labels], labels, loc="center right",
                  fontsize=7, frameon=False)


def sparse_filter_speedup(result: Dict, path: str) -> str:
    plt = _pyplot()
    rows = result["rows"]
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    columns = min(len(layers), 2)
    figure, axes = plt.subplots(math.ceil(len(layers) / columns), columns,
                                figsize=(6 * columns + 2, 4 * math.ceil(len(layers) / columns)),
                                squeeze=False)
    crossings = sparse_filter.crossovers(rows)
    baseline = sparse_filter.BASELINE
    names = sparse_filter.contender_names(rows)
    for axis, layer in zip(axes.flat, layers):
        selected = sorted((r for r in rows if r["layer"] == layer), key=lambda r: r["sparsity"])
        for name in sparse_filter.contender_names(selected):
            points = [(r["sparsity"], r["speedup"][name]) for r in selected
                      if name in r["speedup"]]
            axis.plot(*zip(*points), label=name, **_style(name, names))
        axis.axhline(1.0, color="black", linewidth=0.8)
        crossing = crossings.get("ours:auto", {}).get(layer)
        if crossing and crossing["kind"] == "between":
            axis.axvline(crossing["sparsity"], color="red", linestyle=":", linewidth=1.2)
            axis.annotate(f"crossover {crossing['sparsity']:.0%}",
                          (crossing["sparsity"], 1.0), textcoords="offset points",
                          xytext=(4, 8), color="red", fontsize=8)
        axis.set_yscale("log")
        _plain_log_ticks(axis, "x")
        axis.set_title(f"{layer}, batch {selected[0]['batch']}")
        axis.set_xlabel("sparsity (fraction of taps pruned)")
        axis.set_ylabel(f"speedup over {baseline}")
        axis.grid(True, which="both", alpha=0.3)
    for axis in list(axes.flat)[len(layers):]:
        axis.set_visible(False)
    _legend_right(figure, axes.flat)
    figure.suptitle(f"Sparse-filter conv2d on {result.get('device', 'cpu')}: "
                    f"speedup over {baseline} (above 1 = faster)")
    figure.tight_layout(rect=(0, 0, 0.82, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def toeplitz_grid(result: Dict, path: str) -> str:
    """A heatmap of the grid: colour = our best speedup over the bar (log scale), text = the
    cell's winner."""
    plt = _pyplot()
    rows = toeplitz.in_group(result["rows"], "grid")
    keys_y = sorted({(r["size"], r["kernel"]) for r in rows})
    keys_x = sorted({(r["batch"], r["density"]) for r in rows})
    values = [[float("nan")] * len(keys_x) for _ in keys_y]
    figure, axis = plt.subplots(figsize=(max(1.3 * len(keys_x) + 2.5, 6),
                                         max(0.9 * len(keys_y) + 1.8, 3)))
    for r in rows:
        i, j = keys_y.index((r["size"], r["kernel"])), keys_x.index((r["batch"], r["density"]))
        ours = [s for n, s in r["speedup"].items() if n.startswith("ours:")]
        best = max(ours) if ours else float("nan")
        values[i][j] = math.log2(best) if ours else float("nan")
        axis.text(j, i, f"{r['winner']}\n{best:.2f}x", ha="center", va="center", fontsize=6)
    finite = [abs(v) for line in values for v in line if v == v]
    limit = max([1.0] + finite)  # symmetric around parity, wide enough for every cell
    image = axis.imshow(values, cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    axis.set_xticks(range(len(keys_x)), [f"b{b}\nd{d:g}" for b, d in keys_x], fontsize=7)
    axis.set_yticks(range(len(keys_y)), [f"{s}x{s} k{k}" for s, k in keys_y], fontsize=7)
    colorbar = figure.colorbar(image, ax=axis)
    colorbar.set_label("log2 of our best speedup over the bar")
    bars = ", ".join(sorted({r["bar"] for r in rows}))
    axis.set_title(f"Sparse-input conv2d: the winner of each cell\n"
                   f"colour: our best against the bar ({bars})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def toeplitz_sweeps(result: Dict, path: str) -> str:
    plt = _pyplot()
    fields = [f for f in toeplitz.SWEEP_FIELDS if toeplitz.in_group(result["rows"], f"sweep:{f}")]
    columns = min(len(fields), 2)
    panel_rows = math.ceil(len(fields) / columns)
    figure, axes = plt.subplots(panel_rows, columns, figsize=(5 * columns + 2.5, 4 * panel_rows),
                                squeeze=False)
    names = toeplitz.names_of(result["rows"])
    for axis, field in zip(axes.flat, fields):
        swept = sorted(toeplitz.in_group(result["rows"], f"sweep:{field}"),
                       key=lambda r: r[field])
        for name in toeplitz.names_of(swept):
            points = [(r[field], r["seconds"][name] * 1e3) for r in swept
                      if name in r["seconds"]]
            axis.plot(*zip(*points), label=name, **_style(name, names))
        axis.set_xscale("log")
        axis.set_yscale("log")
        _plain_log_ticks(axis)
        values = [r[field] for r in swept]
        axis.set_xticks(values, [f"{v:g}" for v in values])  # label exactly what was swept
        axis.set_xlabel(field)
        axis.set_ylabel("ms per call")
        axis.set_title(f"sweep over {field}")
        axis.grid(True, which="both", alpha=0.3)
    for axis in list(axes.flat)[len(fields):]:
        axis.set_visible(False)
    _legend_right(figure, axes.flat)
    figure.suptitle(f"Sparse-input conv2d on {result.get('device', 'cpu')}: time per call, "
                    "one variable swept around the base cell")
    figure.tight_layout(rect=(0, 0, 1 - 2.3 / (5 * columns + 2.5), 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _speedup_per_cell(result: Dict, path: str, names: List[str], labels: List[str],
                      bar: str, title: str, width_per_cell: float) -> str:
    """One point per cell and contender: its speedup over ``bar`` (log scale), the cells
    (``labels``) along the x axis in the order they ran, markers only (the cells are
    categories, not a scale)."""
    plt = _pyplot()
    rows = result["rows"]
    figure, axis = plt.subplots(figsize=(max(width_per_cell * len(rows) + 4.5, 8), 5))
    for name in names:
        points = [(i, r["speedup"][name]) for i, r in enumerate(rows) if name in r["speedup"]]
        style = dict(_style(name, names), linestyle="none")
        style["markersize"] = 6 if name.startswith("ours:") else 5
        axis.plot(*zip(*points), label=name, **style)
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_yscale("log")
    _plain_log_ticks(axis, "x")
    axis.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    axis.set_ylabel(f"speedup over {bar}")
    axis.grid(True, which="both", alpha=0.3)
    _legend_right(figure, [axis])
    axis.set_title(f"{title} on {result.get('device', 'cpu')}: speedup over {bar} "
                   "(above 1 = faster)", fontsize=9)
    figure.tight_layout(rect=(0, 0, 0.8, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def workload_speedup(result: Dict, path: str) -> str:
    """A sparse-input workload suite: every contender's speedup over the bar, per cell."""
    rows = result["rows"]
    return _speedup_per_cell(result, path, toeplitz.names_of(rows), [r["cell"] for r in rows],
                             ", ".join(sorted({r["bar"] for r in rows})),
                             toeplitz_workloads.SUITES[result["suite"]].title, 0.45)


def cells_speedup(result: Dict, path: str, label, title: str) -> str:
    """A sparse-filter suite of named cells (``label(row)``): every contender's speedup over
    ``dense``, per cell."""
    rows = result["rows"]
    return _speedup_per_cell(result, path, sparse_filter.contender_names(rows),
                             [label(r) for r in rows], sparse_filter.BASELINE, title, 0.6)


def make(result: Dict, directory: str) -> List[str]:
    """Every plot of a suite's result, written under ``directory``; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    suite = result["suite"]
    if not result["rows"]:
        return []
    if suite == "sparse-filter":
        return [sparse_filter_speedup(result, os.path.join(directory,
                                                           "sparse-filter-speedup.png"))]
    if suite in sparse_filter_layers.SUITES:
        layers = sparse_filter_layers.SUITES[suite]
        path = os.path.join(directory, f"{suite}-speedup.png")
        if layers.sweeps_sparsity(result.get("config", {})):
            return [sparse_filter_speedup(result, path)]
        return [cells_speedup(result, path, lambda r: f"{r['layer']} {r['sparsity']:.0%}",
                              layers.title)]
    if suite == sparse_filter_train.NAME:
        return [cells_speedup(result, os.path.join(directory, f"{suite}-speedup.png"),
                              lambda r: f"{r['layer']} {r['sparsity']:.0%}",
                              sparse_filter_train.TITLE)]
    if suite == "resnet50":
        return [cells_speedup(result, os.path.join(directory, "resnet50-speedup.png"),
                              lambda r: f"b{r['batch']} {r['sparsity']:.0%}", resnet50.TITLE)]
    if suite == resnet18_train.NAME:
        return [cells_speedup(result, os.path.join(directory, f"{suite}-speedup.png"),
                              lambda r: f"b{r['batch']} {r['sparsity']:.0%}",
                              resnet18_train.TITLE)]
    if suite == "toeplitz":
        paths = []
        if toeplitz.in_group(result["rows"], "grid"):
            paths.append(toeplitz_grid(result, os.path.join(directory, "toeplitz-grid.png")))
        if any(g.startswith("sweep:") for r in result["rows"] for g in r["groups"]):
            paths.append(toeplitz_sweeps(result, os.path.join(directory,
                                                              "toeplitz-sweeps.png")))
        return paths
    if suite in toeplitz_workloads.SUITES:
        return [workload_speedup(result, os.path.join(directory, f"{suite}-speedup.png"))]
    raise ValueError(f"no plots for suite {suite!r}")
