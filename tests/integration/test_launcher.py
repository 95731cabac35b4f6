"""`fedkube run` as a user runs it: its processes, their logs, Ctrl-C, a crashed client, exit codes.

The launcher forks every process from one warm interpreter (fedkube.zygote); these tests hold
it to what separate interpreters gave: a log file and a session per process, every process
stopped on Ctrl-C, a crashed child named with its log tail, and the same exit codes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from jobs import HERE, job_doc, with_task


def launch(doc: dict, tmp_path: Path, **env: str) -> tuple[subprocess.Popen[str], Path]:
    manifest, run_dir = tmp_path / "job.yaml", tmp_path / "run"
    manifest.write_text(yaml.safe_dump(doc))
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "fedkube.cli", "run", str(manifest), "--output-dir", str(run_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONPATH": path, **env}, start_new_session=True)
    return process, run_dir


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def rounds_done(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "metrics.json").read_text()))
    except (OSError, ValueError):
        return 0


def wait_until(what: str, predicate, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.parametrize("zygote", ["1", "0"])
def test_ctrl_c_stops_every_process_and_each_kept_its_own_log_and_session(tmp_path: Path, zygote: str) -> None:
    doc = job_doc("interrupted", partitions=2, rounds=500, min_available=2, localEpochs=1)
    launcher, run_dir = launch(doc, tmp_path, FEDKUBE_ZYGOTE=zygote)
    try:
        wait_until("round 1 to end", lambda: rounds_done(run_dir) > 0)
        children = descendants(launcher.pid)
        logs = {p.name for p in (run_dir / "logs").iterdir()}
        assert {"aggregator.log", "client-0.log", "client-1.log"} <= logs
        assert "joined" in (run_dir / "logs" / "client-1.log").read_text()
        workers = [pid for pid in children if os.getsid(pid) == pid]  # aggregator and clients lead sessions
        assert len(workers) == 3 + (zygote == "1"), children

        launcher.send_signal(signal.SIGINT)
        out, _ = launcher.communicate(timeout=60)
    finally:
        for pid in descendants(launcher.pid):  # only if the launcher left them: the test then fails
            os.kill(pid, signal.SIGKILL)
        launcher.kill()
    assert launcher.returncode == 130, out
    assert "interrupted: stopping every process" in out
    wait_until("every child to be gone", lambda: not any(map(alive, children)), timeout=10)


def test_a_crashed_client_is_named_with_its_log_tail_and_the_job_fails(tmp_path: Path) -> None:
    doc = with_task(job_doc("crashing", partitions=2, rounds=2, min_available=2, joinTimeoutSeconds=20),
                    "fixture_tasks:broken_partition", {"brokenPartition": 1})
    launcher, run_dir = launch(doc, tmp_path)
    out, _ = launcher.communicate(timeout=300)

    assert launcher.returncode == 1, out
    assert "client-1 exited with code 1" in out
    assert "partition 1's disk is unreadable" in out  # the tail of client-1.log, shown by the launcher
    assert "partition 1's disk is unreadable" in (run_dir / "logs" / "client-1.log").read_text()
    assert "job crashing failed" in out
