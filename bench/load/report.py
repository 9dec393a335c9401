"""A load run's report: a table on the terminal, the JSON file, and a PNG of latency over time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from bench.load.recorder import MEASURES

LABELS = {"ack": "ack", "trade": "order -> trade published", "ws": "order -> WebSocket delivery"}


def print_report(report: dict[str, Any], out: TextIO) -> None:
    from infra.cli.common import print_table

    cfg, counts, tp = report["config"], report["counts"], report["throughput"]
    print(f"\nvia {cfg['via']}, offered {cfg['rate']:,.0f}/s for {cfg['duration']:g} s, {cfg['accounts']} accounts, "
          f"{', '.join(cfg['symbols'])} ({report['machine']['cpus']} CPUs, load average "
          f"{report['machine']['loadavg_start'][0]:.1f} -> {report['machine']['loadavg_end'][0]:.1f})", file=out)
    rows = []
    for m in MEASURES:
        s = report["latency_ms"][m]
        rows.append((LABELS[m], s["count"], *(s[k] if s[k] is not None else "-" for k in
                                              ("p50", "p95", "p99", "p99_9", "max"))))
    print_table(("latency (ms, from scheduled send)", "count", "p50", "p95", "p99", "p99.9", "max"), rows, out)
    print(file=out)
    print_table(("throughput", "value"), [(k, json.dumps(v)) for k, v in tp.items()], out)
    print(file=out)
    side = side_by_side(report)
    if side:
        print_table(("side by side, same run", "per second", "vs baseline"), side, out)
        print(file=out)
    print_table(("outcome", "count"), [(k, json.dumps(v)) for k, v in counts.items()], out)
    prof = report.get("profile", {})
    if prof.get("cpu_seconds"):
        print(file=out)
        print_table(("process", "CPU s", "CPU us per sent request", "CPU us per answered"),
                    [(k, v["seconds"], v["us_per_request"], v.get("us_per_answered", "-"))
                     for k, v in prof["cpu_seconds"].items()], out)
    if prof.get("exchange_process_split"):
        print(file=out)
        print_table(("exchange process: where the samples were", "share %"),
                    [(r["part"], round(100 * r["share"], 1)) for r in prof["exchange_process_split"]], out)


def side_by_side(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The run's rates next to the plain redis-py hop measured on the same server in the same run
    (`--baseline`): the row docs/benchmarks.md quotes. Empty without a baseline."""
    tp = report["throughput"]
    baseline = tp.get("baseline_plain_hop_per_s")
    if not baseline:
        return []
    agents = tp.get("agent_messages_per_s") or {}
    rows: list[tuple[str, float | None]] = [
        ("plain redis-py hop (baseline)", baseline),
        ("offered", tp.get("offered_per_s")),
        ("answered (ack)", tp.get("acked_per_s")),
        *((f"through {agent}", agents[agent]) for agent in ("validate", "match") if agent in agents),
        ("completed end to end", tp.get("completed_per_s")),
        ("trades published", tp.get("trades_per_s")),
    ]
    return [(name, f"{rate:,.0f}" if rate is not None else "- (not caught up)",
             _ratio(rate / baseline) if rate is not None else "-") for name, rate in rows]


def _ratio(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.4f}x"


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Latency per second of scheduled time (p50, p99, max of each measure) over the offered/acked rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, height_ratios=(3, 1))
    colors = {"ack": "tab:blue", "trade": "tab:orange", "ws": "tab:green"}
    for m in MEASURES:
        series = report["series"][m]
        if not series:
            continue
        t = [row["t"] for row in series]
        top.plot(t, [row["p50"] for row in series], color=colors[m], linestyle=":", label=f"{LABELS[m]} p50")
        top.plot(t, [row["p99"] for row in series], color=colors[m], label=f"{LABELS[m]} p99")
        top.plot(t, [row["max"] for row in series], color=colors[m], alpha=0.35, label=f"{LABELS[m]} max")
    top.set_yscale("log")
    top.set_ylabel("latency, ms (from scheduled send)")
    top.grid(True, which="both", alpha=0.3)
    top.legend(fontsize=7, ncol=3)
    cfg = report["config"]
    top.set_title(f"exchange bench: via {cfg['via']}, {cfg['rate']:,.0f}/s offered for {cfg['duration']:g} s")
    offered = report["offered_series"]
    bottom.plot([r["t"] for r in offered], [r["count"] for r in offered], label="offered/s", color="black")
    acks = report["series"]["ack"]
    bottom.plot([r["t"] for r in acks], [r["count"] for r in acks], label="answered (of those scheduled that second)",
                color="tab:blue", linestyle="--")
    trades = report["series"]["trade"]
    bottom.plot([r["t"] for r in trades], [r["count"] for r in trades], label="our trades (by taker scheduled second)",
                color="tab:orange")
    bottom.set_xlabel("second of the run (scheduled time)")
    bottom.set_ylabel("per second")
    bottom.grid(True, alpha=0.3)
    bottom.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
