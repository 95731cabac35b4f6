"""Update compression on a real digits update: bytes on the wire and error, per codec.

Trains one digits client for one round to get a genuine update, encodes it with every codec,
decodes it through the aggregator's own decoder into a WeightedSum, and prints the wire size
against the uncompressed update measured in the same run, with the relative L2 error of the
decoded update. `--publish` adds the table to BENCHMARKS.md.

    python -m bench.compression [--publish]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from bench.common import Report
from fedkube.aggregator.accumulate import WeightedSum
from fedkube.compression import UpdateDecoder, build_codec
from fedkube.plan import TrainSettings
from fedkube.protocol.tensors import ChunkCursor, iter_chunks, specs_of
from fedkube.spec.model import CompressionSpec, OptimizerSpec, PartitionerSpec, TaskSpec
from fedkube.tasks import load_task
from fedkube.weights import get_weights, subtract

CODECS = [CompressionSpec("none"), CompressionSpec("fp16"), CompressionSpec("int8"),
          CompressionSpec("topk", 0.1), CompressionSpec("topk", 0.01)]


def digits_update() -> dict[str, np.ndarray]:
    task = load_task(TaskSpec("fedkube.tasks.digits:task"))
    torch.manual_seed(0)
    model = task.build_model()
    start = get_weights(model)
    data = task.load_partition(0, 8, PartitionerSpec("dirichlet", 0.5))
    task.train(model, data, TrainSettings(2, 32, OptimizerSpec("sgd", 0.05, 0.9)), torch.device("cpu"), 0)
    return subtract(get_weights(model), start)


def decode(spec: CompressionSpec, update: dict[str, np.ndarray], wire: dict[str, np.ndarray]) -> dict:
    specs = specs_of(update)
    acc = WeightedSum(specs)
    decoder = UpdateDecoder(build_codec(spec), specs, acc.begin(1.0))
    cursor = ChunkCursor(specs_of(wire))
    for chunk in iter_chunks(wire.values()):
        decoder.feed(*cursor.advance(len(chunk)), chunk)
    decoder.fold.commit()
    return acc.mean()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publish", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()
    update = digits_update()
    dense = sum(a.nbytes for a in update.values())
    norm = np.sqrt(sum(float((a.astype(np.float64) ** 2).sum()) for a in update.values()))
    report = Report(f"Update compression, one digits client update ({dense:,} bytes)",
                    ["codec", "bytes on the wire", "smaller than none by", "relative L2 error", "encode + decode ms"])
    for spec in CODECS:
        started = time.perf_counter()
        wire = build_codec(spec).encode(update, 0)
        decoded = decode(spec, update, wire)
        ms = (time.perf_counter() - started) * 1000
        size = sum(a.nbytes for a in wire.values())
        error = np.sqrt(sum(float(((decoded[n] - a) ** 2).sum()) for n, a in update.items())) / norm
        report.add(spec.kind + (f" {spec.ratio}" if spec.ratio else ""), f"{size:,}", f"{dense / size:.2f}x",
                   f"{error:.4f}", f"{ms:.1f}")
    report.record(args.publish)
    return 0


if __name__ == "__main__":
    sys.exit(main())
