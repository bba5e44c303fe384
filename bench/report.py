"""The benchmark's figures as a markdown table, appended to bench/RESULTS.md with date and commit."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        return commit + ("+changes" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "-"


def line(name: str, r: dict[str, Any]) -> str:
    h, c, n = r["herald"], r["ceiling"], r["naive"]
    return (f"{name}: herald {h['per_s']}/s ({h['cpu_s_per_1000']} CPU s/1k), ceiling {c['per_s']}/s "
            f"({c['cpu_s_per_1000']} CPU s/1k), naive {n['per_s']}/s ({n['cpu_s_per_1000']} CPU s/1k)")


def _fanouts(record: dict[str, Any]) -> list[str]:
    rows = [f"{record['n']:,} deliveries per scenario (one business event fanned out to that many subscribed "
            f"devices), naive baseline on {record['naive_n']} of them; fakes at {record['latency_ms']:.0f} ms; "
            f"{record['cores']} cores; wall time {record['wall_s']} s.",
            "",
            "| scenario | what | deliveries/s | p50 ms | p95 ms | p99 ms | CPU s / 1,000 | fakes CPU s / 1,000 "
            "| outcome |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in record["results"].items():
        for what in ("herald", "ceiling", "naive"):
            f = r[what]
            outcome = ", ".join(f"{k} {v}" for k, v in sorted(f["statuses"].items()))
            rows.append(f"| {name} | {what} | {f['per_s']:,} | {f['p50_ms']:,} | {f['p95_ms']:,} | {f['p99_ms']:,} "
                        f"| {f['cpu_s_per_1000']} | {f['fakes_cpu_s_per_1000']} | {outcome} |")
    rows += ["", "| scenario | herald / naive (rate) | herald / ceiling (rate) | herald CPU / ceiling CPU "
                 "| fan-out recorded |", "|---|---:|---:|---:|---|"]
    for name, r in record["results"].items():
        h, c, n = r["herald"], r["ceiling"], r["naive"]
        recorded = f"{h['statuses'].get('sent', 0):,} sent, {h['attempts']:,} attempt rows of {h['n']:,}"
        rows.append(f"| {name} | {ratio(h['per_s'], n['per_s'])} | {h['per_s'] / c['per_s']:.0%} "
                    f"| {ratio(h['cpu_s_per_1000'], c['cpu_s_per_1000'])} | {recorded} |")
    return rows


def markdown(record: dict[str, Any]) -> str:
    rows = [f"### {record['date']}, commit `{record['commit']}`, {record['mode']} mode", ""]
    if record["results"]:
        rows += _fanouts(record)
    else:
        rows.append(f"{record['cores']} cores; fakes at {record['latency_ms']:.0f} ms; wall time {record['wall_s']} s.")
    if record.get("pages"):
        from bench import pages

        rows += pages.markdown(record["pages"])
    if record.get("libraries"):
        from bench import libraries

        rows += libraries.markdown(record["libraries"])
    rss = record.get("peak_rss_mb") or {}
    if rss:
        rows += ["", "Peak RSS per herald worker process (MB): "
                 + ", ".join(f"{k} {v:.0f}" for k, v in sorted(rss.items()))]
    for name, r in record["results"].items():
        top = r["herald"].get("profile")
        if top:
            rows += ["", f"py-spy, deliver pool during `{name}` (share of samples, self time):", ""]
            rows += [f"- {share:.0%} {where}" for where, share in top]
    return "\n".join(rows) + "\n"


def append(path: Path, record: dict[str, Any]) -> None:
    if not path.exists():
        path.write_text("# herald benchmark results\n\n## Runs\n")
    with path.open("a") as handle:
        handle.write("\n" + markdown(record))


def top_of_profile(path: Path, limit: int = 12) -> list[tuple[str, float]]:
    """Self time per function from py-spy's raw (collapsed) output: ``frame;frame;... count``."""
    if not path.exists():
        return []
    leaf: Counter[str] = Counter()
    total = 0
    for text in path.read_text().splitlines():
        stack, _, count = text.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        leaf[frames[-1].strip()] += int(count)
        total += int(count)
    return [(where, n / total) for where, n in leaf.most_common(limit)] if total else []
