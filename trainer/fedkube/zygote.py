"""A warm interpreter that forks a local job's processes, so torch is imported once, not once per process.

`fedkube run` starts the aggregator and every client on one machine at the same moment; each
importing torch, gRPC and the task by itself costs most of a short job's start-up on a laptop's
few cores. The zygote imports them once, then forks each process from that state. It forks only
while it is single-threaded and has opened no gRPC channel or server, so a child starts as clean
as a fresh interpreter; when an import left a thread behind it says so and the launcher starts
fresh interpreters instead. Each child leads its own session (as `start_new_session=True` would)
and writes to its own log; only a parent can reap a child, so the zygote reports each exit status.

Protocol, one JSON object a line: the launcher writes `{"args": [...], "log": path, "name": ...}`
on stdin; the zygote answers `{"ready": true}` (or `{"ready": false, "reason": ...}`) once,
`{"pid": n}` for each request, and `{"exited": n, "code": c}` as children end (c as Popen's returncode).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO

REAP_SECONDS = 0.05
PR_SET_NAME = 15  # Linux prctl: the name `ps -e` and `top` show (15 bytes)


def _threads() -> int:
    """Threads of this process, native ones included where the OS tells (Linux)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def preload(modules: list[str]) -> str | None:
    """Import `modules`; returns why forking would be unsafe, or None.

    A module that fails to import is skipped: the child imports it again and reports the error
    in its own log, as a fresh interpreter would.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # whatever the task's import raises belongs in the child's log
            logging.getLogger(__name__).warning("cannot preload %s:\n%s", name, traceback.format_exc())
    if (threads := _threads()) > 1:
        return f"importing {', '.join(modules)} started {threads - 1} thread(s); forking now is unsafe"
    return None


def _name_process(name: str) -> None:
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the name is cosmetic
        pass


def _become_child(args: list[str], log: str, name: str, private_fds: list[int]) -> None:
    """Run `fedkube ARGS` in this forked process and never return."""
    code = 1
    try:
        os.setsid()
        for fd in private_fds:
            os.close(fd)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.close(stdin)
        _name_process(name)
        sys.argv = ["fedkube", *args]
        from fedkube.cli import main

        code = main(args)
    except SystemExit as exc:  # what the interpreter would make of it
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:  # die of SIGINT, as a fresh interpreter does
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        traceback.print_exc()
    finally:
        _flush()
        os._exit(code)


def _flush() -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _send(replies: int, message: dict[str, Any]) -> None:
    os.write(replies, (json.dumps(message) + "\n").encode())


def _reap(replies: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(replies, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def serve(requests: BinaryIO, replies: int) -> None:
    """Fork a child per request line until stdin closes; report every exit meanwhile."""
    buffer = b""
    while True:
        readable, _, _ = select.select([requests], [], [], REAP_SECONDS)
        _reap(replies)
        if not readable:
            continue
        data = os.read(requests.fileno(), 65536)
        if not data:
            return
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                _become_child(request["args"], request["log"], request["name"], [requests.fileno(), replies])
            _send(replies, {"pid": pid})


class Zygote:
    """The launcher's end: starts the zygote, asks it for children and collects their exit codes."""

    def __init__(self, modules: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "fedkube.zygote", *modules], env=env,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                            start_new_session=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.requests, self.replies = self.process.stdin, self.process.stdout.fileno()
        self.codes: dict[int, int] = {}
        self.answers: list[dict[str, Any]] = []
        self.buffer, self.gone = b"", False

    def ready(self, timeout: float) -> str | None:
        """None once the zygote can fork, else why not (the caller then starts fresh interpreters)."""
        answer = self._answer(timeout)
        if answer is None:
            return f"the zygote did not start within {timeout:g}s or exited; see {self.log}"
        return None if answer["ready"] else str(answer["reason"])

    def spawn(self, args: list[str], log: Path, name: str) -> Forked:
        self.requests.write((json.dumps({"args": args, "log": str(log), "name": name}) + "\n").encode())
        self.requests.flush()
        answer = self._answer(timeout=30.0)
        if answer is None:
            raise OSError(f"the zygote did not fork {name}; see {self.log}")
        return Forked(self, int(answer["pid"]), [sys.executable, "-m", "fedkube.cli", *args])

    def exit_code(self, pid: int) -> int | None:
        self.read(0)
        if pid not in self.codes and self.gone and not _alive(pid):
            self.codes[pid] = 1  # orphaned when the zygote was killed: its status is lost
        return self.codes.get(pid)

    def read(self, timeout: float) -> None:
        """Take in whatever the zygote said within `timeout` seconds."""
        if self.gone:
            time.sleep(timeout)
            return
        if not select.select([self.replies], [], [], timeout)[0]:
            return
        data = os.read(self.replies, 65536)
        self.gone = not data
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for message in map(json.loads, lines):
            if "exited" in message:
                self.codes[message["exited"]] = message["code"]
            else:
                self.answers.append(message)

    def _answer(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while not self.answers and not self.gone and time.monotonic() < deadline:
            self.read(max(0.0, deadline - time.monotonic()))
        return self.answers.pop(0) if self.answers else None

    def close(self) -> None:
        """Let the zygote go (closing its stdin ends it); children already stopped stay reaped."""
        self.requests.close()
        try:
            self.process.wait(5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Forked:
    """A zygote's child, answering what the launcher asks of a `subprocess.Popen`."""

    def __init__(self, zygote: Zygote, pid: int, args: list[str]) -> None:
        self.zygote, self.pid, self.args = zygote, pid, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.exit_code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        while (code := self.poll()) is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.zygote.read(REAP_SECONDS)
        return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedkube.zygote", description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="modules to import before forking")
    args = parser.parse_args(argv)
    # The protocol gets private descriptors; fd 1 joins stderr, so no stray print corrupts a reply.
    requests, replies = os.fdopen(os.dup(0), "rb", buffering=0), os.dup(1)
    os.dup2(2, 1)
    unsafe = preload(args.modules)
    _send(replies, {"ready": unsafe is None, **({"reason": unsafe} if unsafe else {})})
    if unsafe is None:
        serve(requests, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
