"""`make bench`: every benchmark against Flower, then the headline ratios into README.md.

The quick profile (default) keeps Flower's slow default mode to the fewest rounds that give a
round time; `--full` runs more clients, rounds and repeats. Each benchmark appends its own dated
entry to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from bench import aggregate, digits, many_clients, round_overhead, transfer
from bench.common import ROOT, Report, machine_facts

README = ROOT / "README.md"
MARKERS = ("<!-- bench-headline:start -->", "<!-- bench-headline:end -->")
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"aggregate": ([8, 64], 2), "overhead": ([8, 32], 40, 3, [8]), "digits": (12, 2, False),
              "transfer": (1000.0, ["mTLS (default)"]), "many_clients": (1000, 100, 6, 10_000)},
    "full": {"aggregate": ([8, 32, 64], 3), "overhead": ([8, 32], 60, 3, [8, 32]), "digits": (20, 12, True),
             "transfer": (1000.0, list(transfer.TRANSPORTS)), "many_clients": (1000, 100, 20, 10_000)},
}


def rows(report: Report | None, **match: Any) -> list[dict[str, Any]]:
    """The report's rows as dicts, those whose columns equal `match` (none for a report not run)."""
    if report is None:
        return []
    named = [dict(zip(report.columns, row, strict=True)) for row in report.rows]
    return [r for r in named if all(r.get(k) == v for k, v in match.items())]


def headline(agg: Report | None, overhead: Report | None, dig: Report | None, xfer: Report | None,
             many: Report | None = None) -> list[str]:
    """README lines from whichever reports were run."""
    lines = []
    for r in rows(agg, method="fedkube"):
        flower = rows(agg, method="flower-aggregate", clients=r["clients"])
        vs = f", {r['GB/s'] / flower[0]['GB/s']:.0f}x Flower's `aggregate`" if flower and flower[0]["GB/s"] else ""
        lines.append(f"- Aggregation, {r['clients']} x 100 MB updates: {r['x memcpy']:.2f}x numpy memcpy{vs}; "
                     f"extra memory {r['extra / model']:.1f}x the model")
    for r in rows(overhead):
        if not r["peer"].startswith("fedkube") and r["peer / fedkube clear"]:
            lines.append(f"- Round overhead, {r['clients']} clients: {_times(r['peer / fedkube clear'])} less than "
                         f"{r['peer']} in clear text, {_times(r['peer / fedkube mTLS'])} with fedkube's mutual TLS "
                         f"({r['s / round']:.3g} s a round against {_ours(overhead, r['clients'])})")
        elif not r["peer"].startswith("fedkube") and str(r["target"]).startswith("did not finish"):
            lines.append(f"- Round overhead, {r['clients']} clients: {r['peer']} {r['target']}")
    for r in rows(dig, peer="fedkube"):
        lines.append(f"- Digits: {r['x floor']:.2f}x the single-process loop per round ({r['s / round']:.2f} s); "
                     f"95% after {_seconds(r)} from launch")
    for r in rows(dig):
        if r["peer"].startswith("flower"):
            lines.append(f"  - {r['peer']}: {_seconds(r)} to 95%")
    for r in rows(xfer):
        lines.append(f"- {r['model MB']:.0f} MB model over loopback gRPC, {r['transport']}: "
                     f"{r['MB/s (down + up)']:.0f} MB/s, aggregator peak {r['peak / model']:.1f}x the model")
    for r in rows(many)[1:]:
        lines.append(f"- {r['clients joined']} clients joined, {r['sampled / round']} a round: "
                     f"{r['s / round']:.2f} s a round ({r['vs all-sampled: round time']:.1f}x the all-sampled "
                     f"job's), aggregator peak RSS {r['aggregator peak RSS MB']:.0f} MB")
    return lines


def _times(ratio: float) -> str:
    """3 significant digits, without the exponent notation :g gives a ratio of 1000 or more."""
    return f"{ratio:.3g}x" if ratio < 100 else f"{ratio:.0f}x"


def _ours(overhead: Report | None, clients: int) -> str:
    return " and ".join(f"{r['s / round']:.3g} s ({r['peer']})" for r in rows(overhead, clients=clients)
                        if r["peer"].startswith("fedkube"))


def _seconds(row: dict[str, Any]) -> str:
    value = row[next(k for k in row if k.startswith("s to"))]
    reached = str(row[next(k for k in row if k.startswith("round reaching"))])
    if isinstance(value, float):
        return f"{value:.0f} s"
    return reached if reached.startswith("did not finish") else f"more than {row['rounds']} rounds"


def update_readme(lines: list[str], when: str) -> None:
    text = README.read_text()
    block = "\n".join([MARKERS[0], f"Latest benchmark results ({when}; details and machine in "
                       "[BENCHMARKS.md](BENCHMARKS.md)):", "", *lines, MARKERS[1]])
    if MARKERS[0] in text:
        text = re.sub(re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1]), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Benchmarks against Flower\n\n" + block + "\n"
    README.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="more clients, rounds and repeats (about an hour)")
    args = parser.parse_args(argv)
    profile = PROFILES["full" if args.full else "quick"]
    facts = machine_facts()
    agg = aggregate.run(*profile["aggregate"], max_gb=8.0)
    agg.publish(facts)
    overhead = round_overhead.run(*profile["overhead"])
    overhead.publish(facts)
    xfer = transfer.run(*profile["transfer"])
    xfer.publish(facts)
    dig = digits.run(8, *profile["digits"])
    dig.publish(facts)
    many = many_clients.run(*profile["many_clients"])
    many.publish(facts)
    update_readme(headline(agg, overhead, dig, xfer, many), f"{agg.started:%Y-%m-%d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
