"""Checkpoint write and read throughput for a large model, to file:// and to a local S3 endpoint.

A checkpoint write serialises the weights to safetensors, hashes every object and uploads it,
then writes the manifest and the `latest` pointer and prunes; a read downloads every object,
checks its size and sha256 against the manifest and loads the tensors. The peer, measured in the
same run on the same store, is a plain transfer of a file of the same size through the same
Store (put_file / get_file): the ceiling of the medium, so the ratio is what the checkpoint
format (serialisation, hashing, verification) costs on top of moving the bytes.

The S3 endpoint is moto's server in its own process on 127.0.0.1 (`moto_server`), spoken to
over HTTP by the product's boto3 code, as in the integration tests.

    python -m bench.checkpoint_io [--mb 500] [--repeats 2] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import MB, Report
from fedkube.checkpoint import read_checkpoint, write_checkpoint
from fedkube.stores import FileStore, Store
from fedkube.stores.s3 import S3Store

TENSORS = 10


def make_weights(megabytes: float) -> dict[str, np.ndarray]:
    """`TENSORS` float32 tensors of random values (nothing compressible), `megabytes` in all."""
    rng = np.random.default_rng(0)
    per_tensor = int(megabytes * MB / 4 / TENSORS)
    return {f"layer{i}.weight": rng.standard_normal(per_tensor, dtype=np.float32) for i in range(TENSORS)}


def best_seconds(action: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` runs: the one least disturbed by other work on the machine."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(store: Store, weights: dict[str, np.ndarray], scratch: Path, repeats: int) -> dict[str, float]:
    size = sum(w.nbytes for w in weights.values())
    state = {"round": 1, "history": []}
    write = best_seconds(lambda: write_checkpoint(store, 1, weights, {}, state, keep_last=1), repeats)
    read = best_seconds(lambda: read_checkpoint(store, 1), repeats)
    blob = scratch / "blob"
    with blob.open("wb") as f:  # the same number of bytes, for the plain transfer
        for w in weights.values():
            f.write(w.tobytes())
    put = best_seconds(lambda: store.put_file("peer/blob", blob), repeats)
    get = best_seconds(lambda: store.get_file("peer/blob", scratch / "back"), repeats)
    blob.unlink()
    (scratch / "back").unlink()
    return {"write": size / write / MB, "read": size / read / MB, "put": size / put / MB, "get": size / get / MB}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server in its own process, with a bucket `bench`; yields the endpoint URL."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"moto_server did not come up on {endpoint}") from None
                time.sleep(0.2)
        request = urllib.request.Request(f"{endpoint}/bench", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()
        yield endpoint
    finally:
        server.terminate()
        server.wait(10)


def report(megabytes: float, repeats: int, results: dict[str, dict[str, float]], disk: str) -> Report:
    out = Report(f"Checkpoint I/O: a {megabytes:.0f} MB model to file:// and to a local S3 endpoint",
                 ["store", "checkpoint write MB/s", "checkpoint read MB/s", "peer: plain put MB/s",
                  "peer: plain get MB/s", "write / put", "read / get"])
    for name, r in results.items():
        out.add(name, f"{r['write']:.0f}", f"{r['read']:.0f}", f"{r['put']:.0f}", f"{r['get']:.0f}",
                f"{r['write'] / r['put']:.2f}", f"{r['read'] / r['get']:.2f}")
    versions = ", ".join(f"{d} {metadata.version(d)}" for d in ("safetensors", "boto3", "moto"))
    out.notes += [f"file:// on {disk}; S3: moto's server in its own process on 127.0.0.1 ({versions}). "
                  f"Best of {repeats} runs each; MB = 10^6 bytes.",
                  "Write: safetensors serialisation to a staging file, sha256, upload, manifest, `latest`, "
                  "pruning. Read: download, size and sha256 check, safetensors load. The peer moves the same "
                  "bytes through the same Store with no format at all."]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=500.0, help="model size in MB (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the best counts")
    p.add_argument("--no-record", action="store_true", help="do not append the result to BENCHMARKS.md")
    args = p.parse_args(argv)
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)

    weights = make_weights(args.mb)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fedkube-bench-") as tmp:
        scratch = Path(tmp) / "scratch"
        scratch.mkdir()
        results["file://"] = measure(FileStore(f"file://{tmp}/store"), weights, scratch, args.repeats)
        shutil.rmtree(Path(tmp) / "store")
        with moto_endpoint() as endpoint:
            results["s3:// (moto on 127.0.0.1)"] = measure(S3Store("s3://bench/job", endpoint), weights, scratch,
                                                          args.repeats)
        disk = subprocess.run(["df", "--output=fstype", tmp], capture_output=True, text=True).stdout.split()[-1]
    report(args.mb, args.repeats, results, disk).record(not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
