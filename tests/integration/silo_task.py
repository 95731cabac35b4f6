"""A test-only digits task that records, from inside each real client process, what it could reach.

It reads its partition through the Task interface like any task, then writes down which source it
was handed, which files that source holds, which labels it trained on, and every data location
its own configuration names (the manifest on its command line, its environment): a client that
could find another silo's folder through its configuration would show it here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from torch.utils.data import TensorDataset

from fedkube.stores import Store
from fedkube.tasks.digits import DigitsConfig, DigitsTask


def _manifest_path() -> Path:
    return Path(sys.argv[sys.argv.index("--manifest") + 1])


class RecordingSiloTask(DigitsTask):
    def __init__(self, record_dir: Path) -> None:
        super().__init__(DigitsConfig())
        self.record_dir = record_dir

    def load_source(self, partition: int, source: Store) -> TensorDataset:
        data = super().load_source(partition, source)
        manifest = _manifest_path().read_text()
        record = {
            "partition": partition, "uri": source.uri, "files": source.list(),
            "labels": sorted({int(y) for y in data.tensors[1]}),
            "sources": yaml.safe_load(manifest)["spec"]["data"].get("sources", []),
            "configuration": json.dumps({"argv": sys.argv, "env": dict(os.environ), "manifest": manifest}),
        }
        (self.record_dir / f"partition-{partition}.json").write_text(json.dumps(record))
        return data


def task(config: dict[str, Any]) -> RecordingSiloTask:
    return RecordingSiloTask(Path(config["recordDir"]))
