"""fedkube.zygote: children forked from a warm interpreter behave as fresh `fedkube` processes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fedkube import __version__
from fedkube.zygote import Zygote


@pytest.fixture
def zygote(tmp_path: Path):
    started = Zygote(["fedkube.cli"], dict(os.environ), tmp_path / "zygote.log")
    assert started.ready(120) is None
    yield started
    started.close()


def test_a_child_runs_the_command_into_its_own_log_with_its_exit_code(zygote: Zygote, tmp_path: Path) -> None:
    version = zygote.spawn(["--version"], tmp_path / "version.log", "version")
    missing = zygote.spawn(["validate", str(tmp_path / "missing.yaml")], tmp_path / "missing.log", "missing")

    assert version.wait(60) == 0 and missing.wait(60) == 1
    assert (tmp_path / "version.log").read_text().strip() == f"fedkube {__version__}"
    assert "missing.yaml" in (tmp_path / "missing.log").read_text()
    assert version.pid != missing.pid != zygote.process.pid
    assert version.args[-1] == "--version"


def test_a_killed_child_reports_the_signal_as_popen_does(zygote: Zygote, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "never")  # reading a FIFO nobody writes blocks: a child that stays up
    child = zygote.spawn(["validate", str(tmp_path / "never")], tmp_path / "child.log", "stuck")
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(0.5)
    assert os.getsid(child.pid) == child.pid  # its own session, so killpg reaches it and only it
    os.killpg(child.pid, 9)
    assert child.wait(30) == -9 and child.poll() == -9


def test_an_import_that_leaves_a_thread_turns_forking_off(tmp_path: Path) -> None:
    (tmp_path / "spawns_thread.py").write_text("import threading, time\n"
                                               "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    started = Zygote(["spawns_thread"], env, tmp_path / "zygote.log")
    try:
        reason = started.ready(60)
    finally:
        started.close()
    assert reason is not None and "started 1 thread(s)" in reason
