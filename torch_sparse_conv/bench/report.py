"""Markdown from a result JSON, and BENCHMARKS.md sections regenerated from it.

A generated section sits between ``<!-- bench:<suite>:<device> begin -->`` and
``<!-- bench:<suite>:<device> end -->``; :func:`update` replaces exactly that span (or appends
it when the file has none yet), leaving the hand-written text around it alone."""
import json
import os
import re
from typing import Dict, List, Optional

from . import (resnet18_train, resnet50, sparse_filter, sparse_filter_layers,
               sparse_filter_train, toeplitz, toeplitz_workloads)

SUITES = {"sparse-filter": sparse_filter, **sparse_filter_layers.SUITES,
          sparse_filter_train.NAME: sparse_filter_train, "resnet50": resnet50,
          resnet18_train.NAME: resnet18_train, "toeplitz": toeplitz, **toeplitz_workloads.SUITES}
TITLES = {"sparse-filter": "Sparse-filter conv2d", "toeplitz": "Sparse-input (Toeplitz) conv2d",
          **{name: suite.title for name, suite in sparse_filter_layers.SUITES.items()},
          sparse_filter_train.NAME: sparse_filter_train.TITLE, "resnet50": resnet50.TITLE,
          resnet18_train.NAME: resnet18_train.TITLE,
          **{name: suite.title for name, suite in toeplitz_workloads.SUITES.items()}}
MAX_LOSS_LINES = 20


def load(path: str) -> Dict:
    """A result written by ``run``; refuses files from before the suites recorded their
    device and config (rerun those)."""
    with open(path) as f:
        result = json.load(f)
    if not isinstance(result, dict) or result.get("suite") not in SUITES or "device" not in result:
        raise ValueError(f"{path}: not a result of this version of the benchmark (no suite or "
                         "device recorded); run python -m torch_sparse_conv.bench again")
    return result


def machine_lines(result: Dict) -> List[str]:
    m = result.get("machine", {})
    lines = [f"- CPU: {m.get('processor', 'unknown')} ({m.get('cores', '?')} cores seen, "
             f"CPU capability {m.get('cpu_capability', '?')}), {m.get('threads', '?')} threads"
             + (f"; `auto` rule {m['auto_rule']}" if m.get("auto_rule") else "")
             + (f"; `direct`'s one-sample kernel in {m['conv_block_bytes']}-byte vectors"
                if m.get("conv_block_bytes") else "")]
    if m.get("gpu"):
        lines.append(f"- GPU: {m['gpu']} (CUDA {m.get('cuda', '?')}, cuDNN {m.get('cudnn', '?')})")
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    lines.append(f"- torch {m.get('torch', '?')}, Python {m.get('python', '?')}"
                 + (f"; {versions}" if versions else ""))
    heap = result.get("heap")
    if heap and heap.get("applied"):
        lines.append(f"- heap: glibc malloc's mmap threshold raised to "
                     f"{heap['M_MMAP_THRESHOLD'] / 2 ** 20:.0f} MiB and its trim threshold to "
                     f"{heap['M_TRIM_THRESHOLD'] / 2 ** 30:.0f} GiB ({heap['how']}, also in "
                     "the DeepSparse worker): freed memory is reused, not faulted in afresh")
    elif heap:
        lines.append(f"- heap: glibc malloc defaults ({heap.get('why', 'not raised')})")
    peer = (result.get("config") or {}).get("deepsparse_peer")
    if peer:
        lines.append(f"- peer: {peer.get('note')}")
        if peer.get("note_at_end") and peer["note_at_end"] != peer.get("note"):
            lines.append(f"- peer, at the end of the run: {peer['note_at_end']}")
    if result.get("date"):
        lines.append(f"- measured {result['date']}")
    return lines


def section(result: Dict, plots: Optional[List[str]] = None, relative_to: str = ".",
            compact: bool = False) -> str:
    """The Markdown section for one suite's result: how it was run, the machine, the tables,
    plain words on where we lose, and the plots (paths written relative to ``relative_to``).
    ``compact`` asks the suite for narrower tables (the JSON keeps every number)."""
    suite, device = result["suite"], result.get("device", "cpu")
    module = SUITES[suite]
    lines = [f"## {TITLES[suite]} on {device.upper()}", ""]
    if result.get("command"):
        lines += [f"`{result['command']}`", ""]
    lines += machine_lines(result) + [""]
    lines += [(module.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "), ""]
    lines += [module.markdown(result, compact=compact), ""]
    for path in plots or []:
        name = os.path.splitext(os.path.basename(path))[0]
        lines += [f"![{name}]({os.path.relpath(path, relative_to)})", ""]
    words = module.losses(result)
    lines += ["Where we lose, from this run:", ""]
    if not words:
        lines.append("- nowhere in these cells by more than 5 % (differences under that are "
                     "taken as noise)")
    lines += [f"- {w}" for w in words[:MAX_LOSS_LINES]]
    if len(words) > MAX_LOSS_LINES:
        lines.append(f"- ... and {len(words) - MAX_LOSS_LINES} more cells (see the JSON)")
    return "\n".join(lines).rstrip() + "\n"


def markers(result: Dict):
    key = f"bench:{result['suite']}:{result.get('device', 'cpu')}"
    return f"<!-- {key} begin -->", f"<!-- {key} end -->"


def update(path: str, result: Dict, text: str) -> bool:
    """Puts ``text`` between the result's markers in the file at ``path``. Returns True if
    markers were found and replaced, False if the section was appended."""
    begin, end = markers(result)
    block = f"{begin}\n{text.rstrip()}\n{end}"
    existing = open(path).read() if os.path.exists(path) else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(existing):
        updated, found = pattern.sub(lambda _: block, existing), True
    else:
        updated, found = existing.rstrip() + ("\n\n" if existing else "") + block + "\n", False
    with open(path, "w") as f:
        f.write(updated)
    return found
