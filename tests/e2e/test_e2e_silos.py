"""Silos' data in a cluster: each client pod mounts its own PersistentVolumeClaim and trains on it.

The kubelet stand-in bind-mounts each claim's folder read-only into its pod's private mount
namespace at the pod's mountPath, as a kubelet would; the two hospitals hold different numbers of
records with different labels, so each client's log shows whose data it trained on.
"""

from __future__ import annotations

import numpy as np
from conftest import Cluster, small_job, wait_for
from sklearn.datasets import load_digits

RECORDS = {0: (range(0, 5), 150), 1: (range(5, 10), 250)}  # partition -> (its digits, its rows)


def test_each_client_pod_mounts_and_trains_on_its_own_claim_only(cluster: Cluster, kubelet: object) -> None:
    x, y = load_digits(return_X_y=True)
    for p, (labels, rows) in RECORDS.items():
        cluster.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": f"silo-{p}"},
                       "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}}})
        folder = kubelet.root / "claims" / f"silo-{p}"  # type: ignore[attr-defined]
        folder.mkdir(parents=True)
        mine = np.isin(y, list(labels))
        np.savez(folder / "records.npz", x=x[mine][:rows], y=y[mine][:rows])
    cluster.start_operator()
    job = small_job("silos", partitions=2, rounds=1)
    job["spec"]["data"]["sources"] = [{"pvc": {"claimName": "silo-{partition}", "mountPath": "/srv/records"}}]
    cluster.apply(job)

    # Taken while the job runs: the operator deletes client pods still exiting a grace after it ends.
    clients = wait_for(lambda: (c := {int(p["metadata"]["labels"]["fedkube.io/partition"]): p
                                      for p in cluster.pods("silos")
                                      if p["metadata"]["labels"].get("fedkube.io/role") == "client"})
                       and len(c) == len(RECORDS) and c, 120, "both client pods")
    done = cluster.wait_job("silos", lambda j: j.get("status", {}).get("phase") in ("Succeeded", "Failed"), 240,
                            "finished")

    assert done["status"]["phase"] == "Succeeded", cluster.diagnose("silos")
    for p, (_, rows) in RECORDS.items():
        pod = clients[p]
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]
        assert claims == [f"silo-{p}"]
        log = wait_for(lambda pod=pod: kubelet.log(pod["metadata"]["name"]) or None, 10,  # type: ignore[attr-defined]
                       "the client's log")
        assert f"trained on {rows} examples" in log, log[-2000:]
