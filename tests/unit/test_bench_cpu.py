"""The round-overhead benchmark's CPU probe: it must count a child's CPU time between two round ends."""

import subprocess
import sys
import time

from bench.cpu import RoundCpu, descendants_cpu

BURN = "import time\ninput()\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\ninput()"


def test_counts_the_cpu_a_child_spends_between_rounds() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE)
    try:
        cpu = RoundCpu()
        cpu.round_ended(0)  # round 0 (the initial model) is never a timed round
        cpu.round_ended(1)
        assert child.pid in descendants_cpu()
        child.stdin.write(b"\n")
        child.stdin.flush()
        while descendants_cpu().get(child.pid, 0.0) < 0.4:
            time.sleep(0.02)
        cpu.round_ended(3)
        per_round = cpu.per_round()
        assert per_round is not None and 0.15 <= per_round <= 0.35
    finally:
        child.communicate(b"\n", timeout=10)


def test_one_round_end_gives_no_number() -> None:
    cpu = RoundCpu()
    cpu.round_ended(2)
    assert cpu.per_round() is None
