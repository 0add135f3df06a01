"""The summary of a run: checks per family / op / method / direction, the largest error seen
relative to its tolerance, the slowest cases, notes and the first mismatches."""
from collections import Counter

import torch

from .checks import Stats, replay_command
from .library import HAS_CUDA, sparse_convolution
from .tolerance import RELATIVE_FLOOR, SAFETY


def summary(stats: Stats, seconds: float) -> str:
    lines = [f"cases: {dict(stats.cases)}  checks: {sum(stats.checks.values())}  "
             f"mismatches: {len(stats.failures)}  wall time: {seconds:.1f} s",
             f"CUDA: {'checked' if HAS_CUDA else 'skipped (no GPU)'};  sparse_convolution: "
             f"{'importable' if sparse_convolution is not None else 'not installed'};  "
             f"tolerance: |err| <= magnitude * ({SAFETY:g} * (terms + 2) * u + floor "
             f"{RELATIVE_FLOOR[torch.float32]:g} f32 / {RELATIVE_FLOOR[torch.float64]:g} f64)",
             "",
             f"{'family':9} {'op':44} {'method':34} {'direction':22} {'checks':>7} "
             f"{'fail':>5} {'max err/tol':>11} {'(seed)':>8}"]
    failed = Counter(key for _, key, _ in stats.failures)
    for key in sorted(stats.checks):
        ratio, seed = stats.worst.get(key, (float("nan"), -1))
        lines.append(f"{key[0]:9} {key[1]:44} {key[2]:34} {key[3]:22} {stats.checks[key]:7d} "
                     f"{failed[key]:5d} {ratio:11.3g} {seed:8d}")
    overall = max((r for r, _ in stats.worst.values()), default=0.0)
    lines.append(f"\nlargest error seen, relative to its tolerance (passing checks): "
                 f"{overall:.3g}")
    lines.append("slowest cases: " + ", ".join(f"seed {seed} {seconds:.2f} s"
                                               for seconds, seed in reversed(stats.slowest)))
    if stats.notes:
        lines.append("notes (not failures): " + "; ".join(
            f"{family}: {what} x{n}" for (family, what), n in sorted(stats.notes.items())))
    if stats.failures:
        lines.append(f"\n{len(stats.failures)} mismatches (first 30):")
        for seed, key, message in stats.failures[:30]:
            lines.append(f"  seed {seed} {key}: {message.splitlines()[0][:300]}\n"
                         f"    replay: {replay_command(seed)}")
    return "\n".join(lines)
