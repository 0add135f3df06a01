"""Reports of a bad-input fuzz run: the outcome table per category, the non-finite counts per
path, and the failures grouped by what is probably one bug."""
import re
from collections import Counter, defaultdict

from bad_input_cases import FAILURES, FINE


def summarize(results) -> str:
    """A table of outcome counts: a row per category, then all; a column per outcome seen."""
    by_category = defaultdict(Counter)
    for r in results:
        by_category[r["category"]][r["outcome"]] += 1
    outcomes = [o for o in FINE + FAILURES if any(c[o] for c in by_category.values())]
    width = max(len(c) for c in by_category) + 2

    def row(label, cells, total):
        return label.ljust(width) + "".join(str(c).rjust(15) for c in cells) + str(total).rjust(11)

    lines = [row("category", outcomes, "total")]
    for category in sorted(by_category):
        counts = by_category[category]
        lines.append(row(category, [counts[o] for o in outcomes], sum(counts.values())))
    total = Counter(r["outcome"] for r in results)
    lines.append(row("all", [total[o] for o in outcomes], len(results)))
    return "\n".join(lines)


def summarize_nonfinite(results) -> str:
    """Per path (kind without the injection site), the summed non-finite counts."""
    sums = defaultdict(Counter)
    for r in results:
        if r["category"] == "nonfinite":
            path = r["kind"].rsplit("/", 1)[0]
            sums[path]["cases"] += 1
            sums[path][r["outcome"]] += 1
            for key, value in r.get("measured", {}).items():
                if isinstance(value, int):
                    sums[path][key] += value
    return "\n".join(f"  {path}: " + ", ".join(f"{k}={v}" for k, v in sorted(c.items()) if v)
                     for path, c in sorted(sums.items()))


def failures_of(results):
    return [r for r in results if r["outcome"] in FAILURES]


def failure_signature(r) -> str:
    """Groups failures that are probably one bug: outcome, category, kind without values."""
    kind = re.sub(r"=.*", "", r["kind"])
    return f"{r['outcome']} {r['category']}/{kind}"


def format_failures(results, per_group=3) -> str:
    groups = defaultdict(list)
    for r in failures_of(results):
        groups[failure_signature(r)].append(r)
    lines = []
    for signature, members in sorted(groups.items()):
        seeds = [m["seed"] for m in members]
        lines.append(f"{signature}: {len(members)} case(s), seeds {seeds[:12]}"
                     f"{' ...' if len(seeds) > 12 else ''}")
        for m in members[:per_group]:
            detail = m.get("detail", "").strip().replace("\n", "\n      ")
            lines.append(f"    seed {m['seed']} ({m['kind']}): {detail[:700]}")
    return "\n".join(lines)
