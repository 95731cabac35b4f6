"""The malloc settings: a round's worth of 1 MiB messages, held and then freed, is not faulted in again."""

import subprocess
import sys
from pathlib import Path

import fedkube

ROUNDS = """
import resource, sys
if sys.argv[1] == "tuned":
    from fedkube.malloc import keep_freed_memory
    assert keep_freed_memory()
held, faults = [], []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(64):
        held.append(b"x" * (1 << 20))  # a received chunk, kept until its update commits
    held.clear()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))
"""


def faults_after_the_first_round(mode: str) -> int:
    trainer = Path(fedkube.__file__).parents[1]
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(trainer)})
    return int(out.stdout)


def test_freed_messages_are_reused_instead_of_faulted_in_again():
    plain, tuned = faults_after_the_first_round("plain"), faults_after_the_first_round("tuned")
    assert plain >= 3 * 64 * 200  # glibc's defaults: about 256 faults per MiB, every round
    assert tuned <= plain // 20
