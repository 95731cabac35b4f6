"""The objects a FederatedJob becomes, checked through kubectl without running any pod."""

from __future__ import annotations

import yaml
from checks import assert_owned, assert_pods_shaped, job_objects
from conftest import Cluster, small_job, wait_for

GPU_TEMPLATE = {
    "client": {"resources": {"limits": {"nvidia.com/gpu": 1, "cpu": "2"}}, "nodeSelector": {"pool": "gpu"},
               "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    "overrides": [{"partitions": [2, 3], "nodeSelector": {"pool": "a100"}, "priorityClassName": "fl-high",
                   "resources": {"limits": {"nvidia.com/gpu": 2}}}],
}


def test_objects_are_owned_labelled_restricted_and_garbage_collected(cluster: Cluster,
                                                                     garbage_collector: object) -> None:
    cluster.start_operator()
    cluster.apply(small_job("gpu", partitions=4, template=GPU_TEMPLATE))
    pods = wait_for(lambda: len(p := cluster.pods("gpu")) == 5 and p, 30, "1 + 4 pods", diagnose=cluster.diagnose)
    assert_pods_shaped(pods, "gpu", 4)
    assert_owned(cluster, "gpu")

    clients = {p["metadata"]["labels"]["fedkube.io/partition"]: p["spec"] for p in pods
               if p["metadata"]["labels"]["fedkube.io/role"] == "client"}
    for partition, gpus, pool in [("0", 1, "gpu"), ("1", 1, "gpu"), ("2", 2, "a100"), ("3", 2, "a100")]:
        spec = clients[partition]
        assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == gpus
        assert spec["nodeSelector"] == {"pool": pool}
        assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert ("priorityClassName" in spec) == (pool == "a100")

    configmap = cluster.get("configmap", "gpu-manifest")
    stored = yaml.safe_load(configmap["data"]["manifest.yaml"])
    assert stored["spec"]["rounds"] == 3 and stored["spec"]["backoffLimit"] == 3  # validated and defaulted
    table = cluster.kubectl("get", "fj", "gpu").stdout
    assert "Pending" in table and "0/3" in table

    log = cluster.operator_log()
    assert "creating 5 pods: gpu-aggregator, gpu-client-0" in log
    assert "Timer 'reconcile' succeeded" not in log  # quiet passes

    cluster.kubectl("delete", "fj", "gpu", "--timeout=30s")
    wait_for(lambda: not job_objects(cluster, "gpu"), 20, "garbage collection of the job's objects",
             diagnose=cluster.diagnose)
