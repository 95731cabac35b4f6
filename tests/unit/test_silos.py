"""Per-partition placement and data sources: spec rules, resolution, rendering and task reading.

Each silo's client must be placed by its own overrides and reach only its own data: pod i mounts
claim i (or gets Secret i's credentials) and nothing of another partition, and a local client's
manifest names its own folder only.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import Dataset

from fedkube.cli import main
from fedkube.plan import make_plan
from fedkube.spec import SpecError, parse_manifest
from fedkube.spec.model import PartitionerSpec, TaskSpec
from fedkube.spec.sources import client_manifest, local_errors
from fedkube.stores import FileStore
from fedkube.tasks import load_task
from fedkube.tasks.base import ClassificationTask, TaskError
from fedkube.tasks.files import open_source
from fedkube_operator.manifest import admission_errors
from fedkube_operator.render import Owner, RenderConfig, render_aggregator_pod, render_client_pod

ROOT = Path(__file__).resolve().parents[2]
OWNER = Owner("silos", "hospitals", "uid-1")
CONFIG = RenderConfig(image="trainer:test")


def doc(sources: list[dict[str, Any]] | None = None, partitions: int = 3, **spec: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob",
        "metadata": {"name": "silos", "namespace": "hospitals"},
        "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": partitions},
                 "rounds": 2, "clients": {"minAvailable": 2}, **copy.deepcopy(spec)}}
    if sources is not None:
        manifest["spec"]["data"]["sources"] = copy.deepcopy(sources)
    return manifest


def plan_of(manifest: dict[str, Any]) -> Any:
    return make_plan(parse_manifest(manifest, check_entrypoint=False))


def errors_of(manifest: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        parse_manifest(manifest, check_entrypoint=False)
    return {e.path: e.message for e in caught.value.errors}


# --- placement ----------------------------------------------------------------------------------

PLACEMENT = {
    "client": {"resources": {"limits": {"nvidia.com/gpu": 1}}, "nodeSelector": {"pool": "gpu"},
               "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
               "priorityClassName": "fl-default"},
    "overrides": [{"partitions": [2], "resources": {"limits": {"cpu": "4", "memory": "8Gi"}},
                   "nodeSelector": {"site": "hospital-c"},
                   "tolerations": [{"key": "site", "operator": "Equal", "value": "c", "effect": "NoSchedule"}],
                   "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
                   "priorityClassName": "fl-silo-c"}],
}


@pytest.mark.parametrize("partition, resources, selector, toleration_key, priority, affinity", [
    (0, {"limits": {"nvidia.com/gpu": 1}}, {"pool": "gpu"}, "nvidia.com/gpu", "fl-default", False),
    (2, {"limits": {"cpu": "4", "memory": "8Gi"}}, {"site": "hospital-c"}, "site", "fl-silo-c", True),
])
def test_each_placement_field_is_overridden_per_partition(partition: int, resources: dict[str, Any],
                                                          selector: dict[str, str], toleration_key: str,
                                                          priority: str, affinity: bool) -> None:
    pod = render_client_pod(plan_of(doc(template=PLACEMENT)), partition, OWNER, CONFIG)

    spec = pod["spec"]
    assert spec["containers"][0]["resources"] == resources
    assert spec["nodeSelector"] == selector
    assert [t["key"] for t in spec["tolerations"]] == [toleration_key]
    assert spec["priorityClassName"] == priority
    assert ("affinity" in spec) == affinity


# --- spec rules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sources, path, message", [
    ([{"partitions": [0], "pvc": {}}], "spec.data.sources[0].pvc.claimName", "required"),
    ([{"partitions": [0], "pvc": {"claimName": "a"}, "objectStore": {"uri": "s3://bucket/a"}}],
     "spec.data.sources[0]", "sets pvc and objectStore; give exactly one of pvc, objectStore, path"),
    ([{"partitions": [0]}], "spec.data.sources[0]", "sets none"),
    ([{"partitions": [3], "path": "/silo"}], "spec.data.sources[0].partitions[0]", "partition 3 does not exist"),
    ([{"partitions": [0], "path": "/a"}, {"partitions": [0], "path": "/b"}],
     "spec.data.sources[1].partitions[0]", "already named"),
    ([{"partitions": [0, 1], "pvc": {"claimName": "shared"}}], "spec.data.sources[0].pvc.claimName",
     "serves 2 partitions from one location; put {partition} in it"),
    ([{"objectStore": {"uri": "s3://bucket/all"}}], "spec.data.sources[0].objectStore.uri", "serves 3 partitions"),
    ([{"path": "/silos/{partition}"}, {"partitions": [1], "path": "/x"}], "spec.data.sources[0].partitions",
     "absent means every partition"),
    ([{"partitions": [0], "objectStore": {"uri": "s3://B_ad/x"}}], "spec.data.sources[0].objectStore.uri",
     "not an S3 bucket name"),
    ([{"partitions": [0], "objectStore": {"uri": "s3://bucket/x", "endpointUrl": "minio:9000"}}],
     "spec.data.sources[0].objectStore.endpointUrl", "not an http:// or https:// URL"),
    ([{"partitions": [0], "path": "relative/dir"}], "spec.data.sources[0].path", "does not match"),
    ([{"partitions": [0], "path": "/silos"}, {"partitions": [2], "path": "/silos/c/"}], "spec.data.sources[1]",
     "partition 2's data (file:///silos/c) is partition 0's or lies inside it (file:///silos)"),
    ([{"partitions": [0], "objectStore": {"uri": "s3://bkt/a/"}}, {"partitions": [1], "objectStore": {
        "uri": "s3://bkt/a"}}], "spec.data.sources[1]", "partition 1's data (s3://bkt/a) is partition 0's"),
    ([{"partitions": [0, 1], "pvc": {"claimName": "shared", "subPath": "p{partition}"}},
      {"partitions": [2], "pvc": {"claimName": "shared"}}], "spec.data.sources[0]",
     "partition 1's data (pvc://shared/p1) is partition 2's or lies inside it (pvc://shared)"),
    ([{"partitions": [0], "pvc": {"claimName": "Silo_A"}}], "spec.data.sources[0].pvc.claimName",
     "'Silo_A' is not a Kubernetes object name"),
    ([{"objectStore": {"uri": "s3://b-x/{partition}", "secretRef": "creds {partition}"}}],
     "spec.data.sources[0].objectStore.secretRef", "is not a Kubernetes object name"),
])
def test_bad_sources_are_refused_with_their_field_path(sources: list[dict[str, Any]], path: str,
                                                        message: str) -> None:
    errors = errors_of(doc(sources))
    assert path in errors and message in errors[path], errors


def test_a_shared_claim_is_fine_when_each_partition_has_its_own_sub_path() -> None:
    plan = plan_of(doc([{"pvc": {"claimName": "silos", "subPath": "p-{partition}"}}]))
    assert [c.source.pvc.sub_path for c in plan.clients] == ["p-0", "p-1", "p-2"]


def test_where_each_kind_of_source_can_run() -> None:
    pvc = parse_manifest(doc([{"partitions": [1], "pvc": {"claimName": "b"}}]), check_entrypoint=False)
    local = doc([{"path": "/srv/{partition}"}])
    assert [e.path for e in local_errors(pvc.spec)] == ["spec.data.sources[0].pvc"]
    assert [e.path for e in admission_errors("CREATE", local, None)] == ["spec.data.sources[0].path"]
    assert admission_errors("CREATE", doc([{"partitions": [1], "pvc": {"claimName": "b"}}]), None) == []


def test_the_silos_example_is_a_cluster_job_whose_pods_reach_only_their_own_data() -> None:
    example = yaml.safe_load((ROOT / "examples" / "silos-breast-cancer.yaml").read_text())
    assert admission_errors("CREATE", example, None) == []
    plan = plan_of(example)

    pods = [render_client_pod(plan, p, OWNER, CONFIG) for p in range(3)]

    assert [_claims(pod) for pod in pods] == [["silo-0"], ["silo-1"], []]
    secrets = [{e["valueFrom"]["secretKeyRef"]["name"] for e in pod["spec"]["containers"][0]["env"]
                if "secretKeyRef" in e.get("valueFrom", {})} for pod in pods]
    assert secrets == [set(), set(), {"hospital-c-s3"}]
    assert [pod["spec"]["nodeSelector"]["fedkube.io/silo"] for pod in pods] == [
        "hospital-a", "hospital-b", "hospital-c"]


@pytest.mark.parametrize("mount_path, clash", [("/tmp", "/tmp"), ("/etc/fedkube", "/etc/fedkube/ckks"),
                                               ("/tmp/data/", "/tmp"), ("/", "/etc/fedkube/ckks")])
def test_a_claim_may_not_be_mounted_over_what_the_pod_uses(mount_path: str, clash: str) -> None:
    manifest = doc([{"partitions": [0], "pvc": {"claimName": "silo-0", "mountPath": mount_path}}])

    (error,) = admission_errors("CREATE", manifest, None)

    assert error.path == "spec.data.sources[0].pvc.mountPath" and f"overlaps {clash!r}" in error.message


def test_fedkube_run_refuses_a_claim_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(doc([{"partitions": [0], "pvc": {"claimName": "silo-0"}}])))

    assert main(["run", str(manifest), "--output-dir", str(tmp_path / "run")]) == 1

    assert "spec.data.sources[0].pvc: a PersistentVolumeClaim needs a cluster" in capsys.readouterr().err
    assert not (tmp_path / "run" / "logs").exists()  # nothing was started


# --- resolution: each client gets its own source, and only it -----------------------------------

def test_placeholders_resolve_per_partition_and_unnamed_partitions_use_the_partitioner() -> None:
    plan = plan_of(doc([{"partitions": [0, 1], "objectStore": {
        "uri": "s3://silos/p{partition}/", "endpointUrl": "http://minio:9000", "secretRef": "creds-{partition}"}}]))
    stores = [c.source.object_store if c.source else None for c in plan.clients]
    assert [(s.uri, s.secret_ref, s.endpoint_url) for s in stores[:2]] == [
        ("s3://silos/p0/", "creds-0", "http://minio:9000"), ("s3://silos/p1/", "creds-1", "http://minio:9000")]
    assert plan.clients[0].source.partitions == (0,) and stores[2] is None


def test_a_local_clients_manifest_names_its_own_folder_and_no_other() -> None:
    job = parse_manifest(doc([{"path": "/silos/{partition}/data"}]), check_entrypoint=False)

    mine = client_manifest(job.manifest, job.spec, 1)

    assert mine["spec"]["data"]["sources"] == [{"partitions": [1], "path": "/silos/1/data"}]
    assert "/silos/0" not in str(mine) and "/silos/2" not in str(mine)
    assert job.manifest["spec"]["data"]["sources"] == [{"path": "/silos/{partition}/data"}]  # untouched
    assert make_plan(parse_manifest(mine, check_entrypoint=False)).clients[1].source.path == "/silos/1/data"


# --- rendering: pod i mounts claim i only, gets Secret i only ----------------------------------

def _claims(pod: dict[str, Any]) -> list[str]:
    return [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]


def test_each_client_pod_mounts_only_its_own_claim_read_only() -> None:
    plan = plan_of(doc([{"partitions": [0, 1], "pvc": {"claimName": "silo-{partition}", "mountPath": "/silo"}},
                        {"partitions": [2], "pvc": {"claimName": "shared", "subPath": "c"}}]))

    pods = [render_client_pod(plan, p, OWNER, CONFIG) for p in range(3)]

    assert [_claims(pod) for pod in pods] == [["silo-0"], ["silo-1"], ["shared"]]
    for pod in pods:
        (data,) = [v for v in pod["spec"]["volumes"] if v["name"] == "data"]
        assert data["persistentVolumeClaim"]["readOnly"] is True
    mounts = [[m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "data"] for pod in pods]
    assert mounts == [[{"name": "data", "mountPath": "/silo", "readOnly": True}],
                      [{"name": "data", "mountPath": "/silo", "readOnly": True}],
                      [{"name": "data", "mountPath": "/data", "readOnly": True, "subPath": "c"}]]
    aggregator = render_aggregator_pod(plan, OWNER, CONFIG)
    assert not {"silo-0", "silo-1", "shared"} & set(_claims(aggregator))


def test_each_client_pod_gets_only_its_own_secrets_credentials() -> None:
    plan = plan_of(doc([{"objectStore": {"uri": "s3://silos/{partition}", "secretRef": "silo-{partition}"}}]))

    for p in range(3):
        env = render_client_pod(plan, p, OWNER, CONFIG)["spec"]["containers"][0]["env"]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
        assert {r["name"] for r in refs.values()} == {f"silo-{p}"}
        assert set(refs) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
        assert refs["AWS_SESSION_TOKEN"].get("optional") is True
    aggregator_env = render_aggregator_pod(plan, OWNER, CONFIG)["spec"]["containers"][0]["env"]
    assert not [e for e in aggregator_env if e["name"].startswith("AWS_")]


def test_clients_without_a_source_get_no_data_volume() -> None:
    pod = render_client_pod(plan_of(doc()), 0, OWNER, CONFIG)
    assert not _claims(pod) and all(v["name"] != "data" for v in pod["spec"]["volumes"])


# --- tasks read their partition from the source ------------------------------------------------

def test_digits_reads_npz_and_csv_files_from_its_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 17, size=(6, 64))
    np.savez(tmp_path / "a.npz", x=x[:4], y=np.array([1, 2, 3, 4]))
    rows = "\n".join(",".join(map(str, [*row, label])) for row, label in zip(x[4:], [7, 8], strict=True))
    (tmp_path / "b.csv").write_text(",".join(f"f{i}" for i in range(64)) + ",label\n" + rows + "\n")
    (tmp_path / "README").write_text("ignored")
    task = load_task(TaskSpec("fedkube.tasks.digits:task"))

    data = task.load_source(0, FileStore(f"file://{tmp_path}"))

    images, labels = data.tensors
    assert labels.tolist() == [1, 2, 3, 4, 7, 8]
    assert images.shape == (6, 1, 8, 8) and torch.allclose(images[5].flatten(), torch.tensor(x[5] / 16.0).float())


@pytest.mark.parametrize("files, message", [
    ({}, "no .npz or .csv files under file://"),
    ({"a.npz": {"x": np.zeros((2, 64))}}, "no array y"),
    ({"a.csv": "1,2\nx,y\n"}, "not a numeric CSV"),
    ({"a.npz": {"x": np.zeros((2, 30)), "y": np.zeros(2)}}, "has 30 features per sample, the model takes 64"),
])
def test_unreadable_sources_name_the_partition_and_the_file(tmp_path: Path, files: dict[str, Any],
                                                            message: str) -> None:
    for name, content in files.items():
        if name.endswith(".npz"):
            np.savez(tmp_path / name, **content)
        else:
            (tmp_path / name).write_text(content)
    task = load_task(TaskSpec("fedkube.tasks.digits:task"))

    with pytest.raises(TaskError, match="partition 2") as caught:
        task.load_source(2, open_source(plan_of(doc([{"partitions": [2], "path": str(tmp_path)}])).clients[2].source))

    assert message in str(caught.value)


class PartitionerOnly(ClassificationTask):
    """A task that only knows its built-in data set."""

    name = "partitioner-only"

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Linear(2, 2)

    def load_partition(self, partition: int, num_partitions: int, partitioner: PartitionerSpec) -> Dataset[Any]:
        raise AssertionError("not called")


def test_a_task_without_source_support_says_so(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=f"task 'partitioner-only' cannot read spec.data.sources "
                                        f"\\(partition 1, file://{tmp_path}\\)"):
        PartitionerOnly().load_source(1, FileStore(f"file://{tmp_path}"))
