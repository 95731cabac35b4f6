"""CPU seconds spent by a process tree, read from /proc (standard library only: Flower's venv imports it).

On a machine shared with other work, wall time per round waits on the scheduler; CPU time per
round is what a framework itself spends, so the round-overhead benchmark reports both.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a live process; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def descendants_cpu(root: int | None = None) -> dict[int, float]:
    """CPU seconds of every live descendant of `root` (default: this process), by pid."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(p)) is not None}
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {}, list(children.get(os.getpid() if root is None else root, []))
    while todo:
        pid = todo.pop()
        found[pid] = stats[pid][1]
        todo += children.get(pid, [])
    return found


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots by the processes alive at the second."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


class RoundCpu:
    """CPU per round of this process's descendants, from the end of the first round seen to the last's."""

    def __init__(self) -> None:
        self.first: tuple[int, dict[int, float]] | None = None
        self.last: tuple[int, dict[int, float]] | None = None

    def round_ended(self, number: int) -> None:
        if number < 1:
            return
        snapshot = (number, descendants_cpu())
        if self.first is None:
            self.first = snapshot
        else:
            self.last = snapshot

    def per_round(self) -> float | None:
        if self.first is None or self.last is None or self.last[0] <= self.first[0]:
            return None
        return spent(self.first[1], self.last[1]) / (self.last[0] - self.first[0])
