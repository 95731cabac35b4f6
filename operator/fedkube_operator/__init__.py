"""fedkube_operator: runs FederatedJobs on Kubernetes as an aggregator pod plus one client pod per partition.

Layers, from pure to I/O:

- `names`, `render`, `status`, `admission`: pure functions (plan -> objects, observations ->
  status and actions, manifests -> admission verdicts), unit tested on their return values;
- `kube` (the only module that talks to the Kubernetes API) and `probe` (the aggregator's
  status endpoint): thin I/O;
- `reconciler`: one reconcile pass per FederatedJob, gluing the two;
- `handlers`: every `@kopf.*` registration, a few lines each; `main`: the CLI.

The operator imports `fedkube.spec` and `fedkube.plan` only: never torch or the trainer runtime.
"""

GROUP = "fedkube.io"
VERSION = "v1alpha1"
PLURAL = "federatedjobs"
KIND = "FederatedJob"
API_VERSION = f"{GROUP}/{VERSION}"
