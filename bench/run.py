"""``make bench``: every benchmark, three repetitions each, medians reported.

Results are printed as a Markdown table and written to bench/out/results.json;
bench/RESULTS.md records the figures with the date and this command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import ingest_throughput, simulator_publish
from bench.common import median_of, private_stack

REPS = 3
INGEST_MESSAGES = 200_000
SIMULATED_HOURS = 3.0


def main() -> None:
    """Run the benchmarks and print the table."""
    rows: list[dict[str, object]] = []
    with private_stack() as stack:
        for qos in (0, 1):
            rates = []
            for rep in range(REPS):
                n, seconds = simulator_publish.measure(stack, qos, SIMULATED_HOURS)
                rates.append(n / seconds)
                print(f"simulator QoS {qos} rep {rep + 1}: {n} msgs in {seconds:.1f} s", flush=True)
            rows.append({"what": f"simulator publish, QoS {qos}", "unit": "msg/s", "reps": rates})
        rates, rss = [], []
        for rep in range(REPS):
            rate, peak_kib, seconds = ingest_throughput.measure(
                stack, INGEST_MESSAGES, f"bench{rep}"
            )
            rates.append(rate)
            rss.append(peak_kib / 1024)
            print(f"ingest rep {rep + 1}: {INGEST_MESSAGES} msgs in {seconds:.1f} s", flush=True)
        rows.append({"what": "ingest published->queryable, QoS 1", "unit": "msg/s", "reps": rates})
        rows.append({"what": "ingest peak RSS during that run", "unit": "MiB", "reps": rss})
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print("\n| what | median | 3 reps |\n| --- | --- | --- |")
    for row in rows:
        reps = [float(r) for r in row["reps"]]  # type: ignore[attr-defined]
        print(
            f"| {row['what']} | {median_of(reps):,.0f} {row['unit']} | "
            + ", ".join(f"{r:,.0f}" for r in reps)
            + " |"
        )


if __name__ == "__main__":
    main()
