"""The report's Markdown summary: configuration, final metrics, privacy spent, where time went.

Every number is computed here from the run's history (metrics.json) and manifest, and printed
with a fixed precision, so a reader (or a test) can check it against metrics.json.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from fedkube.report.plots import PLOTS, TIME_PARTS
from fedkube.report.source import RunRecord
from fedkube.status_document import number, round_epsilon

MIB = 1 << 20
# Sections of the pod templates say where things run, not how the job learns: left out.
SKIPPED_SPEC_KEYS = {"template"}


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _compact(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "), sort_keys=False)
    return "`" + text.replace("|", "\\|") + "`"


def _total(history: Sequence[dict[str, Any]], key: str) -> float:
    return sum(number(h.get(key)) or 0.0 for h in history)


def configuration(record: RunRecord) -> list[str]:
    lines = ["## Configuration", ""]
    if not record.spec:
        return lines + ["The source records no manifest.", ""]
    rows = [(key, _compact(value)) for key, value in record.spec.items() if key not in SKIPPED_SPEC_KEYS]
    return lines + _table(("spec", "value"), rows)


def final_metrics(record: RunRecord) -> list[str]:
    history = record.history
    outcomes = Counter(str(h.get("status", "completed")) for h in history)
    planned = record.spec.get("rounds") or record.status.get("rounds")
    rows: list[tuple[str, str]] = [
        ("phase", str(record.status.get("phase", "unknown (read from a checkpoint)"))),
        ("rounds finished", f"{len(history)}" + (f" of {planned}" if planned else "")),
        ("rounds completed / abandoned", f"{outcomes['completed']} / {outcomes['abandoned']}")]
    if record.status.get("reason"):  # e.g. PrivacyBudgetExhausted: the job ended before its last round
        rows.append(("stopped early", f"{record.status['reason']}: {record.status.get('message', '')}"))
    evaluated = [h for h in history if number(h.get("accuracy")) is not None]
    if evaluated:
        last, best = evaluated[-1], max(evaluated, key=lambda h: h["accuracy"])
        rows += [("final accuracy", f"{last['accuracy']:.4f} (round {last['round']})"),
                 ("final loss", f"{last['loss']:.4f}" if number(last.get("loss")) is not None else "n/a"),
                 ("best accuracy", f"{best['accuracy']:.4f} (round {best['round']})")]
    else:
        rows.append(("final accuracy", "n/a (no central evaluation)"))
    rejected: Counter[str] = Counter()
    for h in history:
        rejected.update({str(k): int(v) for k, v in (h.get("rejected") or {}).items()})
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items()))
    rows += [("training examples", f"{int(_total(history, 'num_examples'))}"),
             ("updates reported", f"{int(_total(history, 'clients_reported'))}"),
             ("clients dropped", f"{int(_total(history, 'clients_dropped'))}"),
             ("updates rejected", f"{int(_total(history, 'clients_rejected'))}" + (f" ({reasons})" if reasons else ""))]
    return ["## Final metrics", ""] + _table(("metric", "value"), rows)


def privacy(record: RunRecord) -> list[str]:
    lines = ["## Privacy spent", ""]
    spent = [e for e in map(round_epsilon, record.history) if e is not None]
    reported = record.status.get("privacy") or {}
    epsilon = number(reported.get("epsilon"))
    epsilon = spent[-1] if epsilon is None and spent else epsilon
    if epsilon is None:
        return lines + ["Differential privacy was not enabled: no privacy budget was spent.", ""]
    settings = record.spec.get("privacy") or {}
    delta = number(reported.get("delta")) or number(settings.get("delta"))
    target = number(reported.get("targetEpsilon")) or number(settings.get("targetEpsilon"))
    sentence = f"ε = {epsilon:.4f}"
    sentence += f" at δ = {delta:g}" if delta is not None else ""
    sentence += f", {100 * epsilon / target:.1f}% of the target ε = {target:g}" if target else ""
    return lines + [f"{sentence}, after round {record.history[-1]['round']}.", ""]


def where_time_went(record: RunRecord) -> list[str]:
    history = record.history
    parts = [(label, _total(history, key)) for key, label in TIME_PARTS]
    total = sum(seconds for _, seconds in parts)
    rows = [(label, f"{seconds:.2f}", f"{100 * seconds / total:.1f}%" if total else "-") for label, seconds in parts]
    rows.append(("total", f"{total:.2f}", "100.0%" if total else "-"))
    lines = ["## Where time went", ""] + _table(("step", "seconds", "share"), rows)
    if history:
        slowest = max(history, key=lambda h: number(h.get("seconds")) or 0.0)
        lines += [f"Slowest round: {slowest['round']} ({number(slowest.get('seconds')) or 0.0:.2f} s). "
                  f"Model traffic: {_total(history, 'bytes_out') / MIB:.2f} MiB sent to clients, "
                  f"{_total(history, 'bytes_in') / MIB:.2f} MiB received from them.", ""]
    lines.append("\"Collecting updates\" is the time from sampling clients to closing the round: their local "
                 "training and the transfers both ways.")
    return lines + [""]


def summary_markdown(record: RunRecord) -> str:
    lines = [f"# Federated run report: {record.job}", "", f"Source: `{record.source}`", ""]
    lines += configuration(record) + final_metrics(record) + privacy(record) + where_time_went(record)
    lines += ["## Plots", "", "![overview](overview.png)", ""]
    lines += [f"![{name.removesuffix('.png').replace('_', ' ')}]({name})" for name in PLOTS] + [""]
    return "\n".join(lines)
