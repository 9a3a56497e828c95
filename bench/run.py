"""``make bench``: every benchmark, three repetitions each, medians reported.

Results are printed as a Markdown table and written to bench/out/results.json;
bench/RESULTS.md records the figures with the date and this command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    alerts_latency,
    alerts_throughput,
    api_latency,
    imagery_throughput,
    simulator_publish,
)
from bench import ingest_throughput as ingest
from bench.common import Stack, median_of, private_stack

REPS = 3
INGEST_MESSAGES = 200_000
BACKLOG_MESSAGES = 300_000
SIMULATED_HOURS = 3.0


def _row(what: str, unit: str, reps: list[float]) -> dict[str, object]:
    digits = 2 if unit == "x" else 1 if unit == "ms" else 0
    print(f"{what}: " + ", ".join(f"{r:,.{digits}f}" for r in reps) + f" {unit}", flush=True)
    return {"what": what, "unit": unit, "reps": reps, "median": median_of(reps)}


def _alerts(stack: Stack) -> list[dict[str, object]]:
    """Rule evaluation throughput, and publish-to-webhook latency steady and in a burst."""
    day = alerts_throughput.demo_day(alerts_throughput.demo_database())
    engine, with_sql = zip(*(alerts_throughput.measure(day) for _ in range(REPS)), strict=True)
    latencies = [alerts_latency.measure(stack, f"alerts{rep}", day) for rep in range(REPS)]
    rows = [
        _row("alerts: rules on a demo day, one process", "events/s", [r.wall for r in engine]),
        _row("alerts: same, per CPU second", "events/s", [r.cpu for r in engine]),
        _row(
            "alerts: same, committed to SQLite every 5,000", "events/s", [r.wall for r in with_sql]
        ),
        _row("alerts: that, per CPU second", "events/s", [r.cpu for r in with_sql]),
    ]
    for i, phase in enumerate(("10x demo load", "burst of 112 alerts")):
        runs = [run[i] for run in latencies]
        for pct in (50, 99):
            values = [alerts_latency.percentile(r, pct) for r in runs]
            rows.append(_row(f"alerts: publish -> webhook, {phase}, p{pct}", "ms", values))
    return rows


def _api(stack: Stack) -> list[dict[str, object]]:
    """p50 and p99 of the API's polled requests at a fixed rate (open loop), on a seeded day."""
    api_latency.seed(stack)
    runs = api_latency.measure(stack, REPS)
    rows = []
    for target in api_latency.TARGETS:
        what = f"API: {target.name} at {target.rate:.0f} requests/s"
        for pct in (50, 99):
            values = [run.percentile(pct) for run in runs[target.name]]
            rows.append(_row(f"{what}, p{pct}", "ms", values))
    return rows


def _imagery() -> list[dict[str, object]]:
    """Snapshots handled per second on one core, and the peak memory, per set and frame size."""
    rows = []
    for kind, width, height, face_width, results in imagery_throughput.runs(REPS):
        what = f"imagery: {kind} snapshots {width}×{height}, faces at {face_width} px, one core"
        rows.append(_row(what, "snapshots/s", [r.rate for r in results]))
        rows.append(_row(f"{what}, per CPU second", "snapshots/s", [r.cpu_rate for r in results]))
        rows.append(_row(f"{what}, peak RSS", "MiB", [r.peak_mib for r in results]))
    return rows


def main() -> None:
    """Run the benchmarks and print the table."""
    rows: list[dict[str, object]] = []
    with_node_red = ingest.install_node_red()
    with private_stack() as stack:
        for qos in (0, 1):
            runs = [simulator_publish.measure(stack, qos, SIMULATED_HOURS) for _ in range(REPS)]
            rows.append(_row(f"simulator publish, QoS {qos}", "msg/s", [r.rate for r in runs]))
            per_cpu = [r.cpu_rate for r in runs]
            rows.append(_row(f"simulator publish, QoS {qos}, per CPU second", "msg/s", per_cpu))
        day = [simulator_publish.measure(stack, 1, 24.0).seconds for _ in range(REPS)]
        rows.append(_row("simulator: the demo's whole day flat out, QoS 1", "s", day))
        consumers = [ingest.GRIDWATCH] + ([ingest.NODE_RED] if with_node_red else [])
        results: dict[str, tuple[list[float], list[float]]] = {c.name: ([], []) for c in consumers}
        for rep in range(REPS):
            for consumer in consumers:  # interleaved, so drift on the machine hits both alike
                rate, rss = ingest.throughput(
                    stack, consumer, INGEST_MESSAGES, f"{consumer.name}{rep}".replace("-", "")
                )
                results[consumer.name][0].append(rate)
                results[consumer.name][1].append(rss / 1024)
        for name, (rates, peaks) in results.items():
            rows.append(_row(f"{name}: published -> queryable, QoS 1", "msg/s", rates))
            rows.append(_row(f"{name}: peak RSS during that run", "MiB", peaks))
        if with_node_red:
            ratios = [
                g / n for g, n in zip(results["gridwatch"][0], results["node-red"][0], strict=True)
            ]
            rows.append(_row("gridwatch / Node-RED throughput", "x", ratios))
        p50s, p99s = [], []
        for rep in range(REPS):
            p50, p99 = ingest.latency(stack, 5_000, 12, f"latency{rep}")
            p50s.append(p50)
            p99s.append(p99)
        rows.append(_row("gridwatch publish -> queryable at 5,000 msg/s, p50", "ms", p50s))
        rows.append(_row("gridwatch publish -> queryable at 5,000 msg/s, p99", "ms", p99s))
        rss_backlog, drain = [], []
        for rep in range(REPS):
            rss, seconds = ingest.backlog_memory(stack, BACKLOG_MESSAGES, f"backlog{rep}")
            rss_backlog.append(rss / 1024)
            drain.append(BACKLOG_MESSAGES / seconds)
        rows.append(
            _row("gridwatch peak RSS, 300,000 messages waiting in the broker", "MiB", rss_backlog)
        )
        rows.append(_row("gridwatch drain of that backlog once InfluxDB is back", "msg/s", drain))
        rows.extend(_alerts(stack))
        rows.extend(_api(stack))
    rows.extend(_imagery())
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print("\n| what | median | 3 reps |\n| --- | --- | --- |")
    for row in rows:
        reps = [float(r) for r in row["reps"]]  # type: ignore[attr-defined]
        digits = 2 if row["unit"] == "x" else 1 if row["unit"] == "ms" else 0
        print(
            f"| {row['what']} | {median_of(reps):,.{digits}f} {row['unit']} | "
            + ", ".join(f"{r:,.{digits}f}" for r in reps)
            + " |"
        )


if __name__ == "__main__":
    main()
