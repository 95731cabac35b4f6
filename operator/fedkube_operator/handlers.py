"""Every Kopf registration of the operator, each a few lines that delegate.

`assemble(config)` builds the registry, Kopf's settings and the shared memo, so intervals and
the webhook come from the command line, and tests build operators with their own settings.
All reconciliation happens in one timer per FederatedJob (first pass at once, on creation or
when the operator starts): one writer per job, no races between create, update and timer
handlers. Handlers patch status through `kube` and return nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import kopf

from fedkube_operator import GROUP, PLURAL, VERSION
from fedkube_operator.config import OperatorConfig
from fedkube_operator.kube import Kube, KubeError, login
from fedkube_operator.manifest import admission_errors, admission_message
from fedkube_operator.names import LABEL_JOB
from fedkube_operator.observe import pod_view
from fedkube_operator.probe import AggregatorProbe
from fedkube_operator.reconciler import Runtime, reconcile
from fedkube_operator.webhook import FedkubeWebhookServer

ANNOTATION_PREFIX = "fedkube.io"
FINALIZER = "fedkube.io/operator"
VALIDATING_WEBHOOK_ID = "validate-federatedjob"


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """Kopf's bookkeeping in annotations (status is ours), events only when we post them."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    settings.posting.reporting_component = "fedkube-operator"
    settings.posting.level = logging.WARNING  # Kopf's own chatter stays in the log
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    if config.webhook is not None:
        settings.admission.server = FedkubeWebhookServer(config.webhook)
        settings.admission.managed = config.webhook.managed


@dataclass(frozen=True)
class Assembly:
    """What `kopf.run()` / `kopf.operator()` need besides the namespaces to serve."""

    registry: kopf.OperatorRegistry
    settings: kopf.OperatorSettings
    memo: kopf.Memo

    def kwargs(self) -> dict[str, Any]:
        return {"registry": self.registry, "settings": self.settings, "memo": self.memo}


def assemble(config: OperatorConfig) -> Assembly:
    settings = kopf.OperatorSettings()
    configure(settings, config)
    kube = Kube(max_in_flight=config.api_concurrency)
    memo = kopf.Memo(runtime=Runtime(config, kube, AggregatorProbe(config.probe_timeout_seconds)))
    return Assembly(build_registry(config), settings, memo)


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        await memo.runtime.close()

    @kopf.on.login(id="login", registry=registry)
    def authenticate(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
        info = login(**kwargs)
        if info is not None:
            memo.runtime.kube.use(info)
        return info

    # Handlers are coroutines even when they need not be: Kopf runs plain functions in a thread pool,
    # a thread hop for every pod event.
    @kopf.index("", "v1", "pods", id="job_pods", labels={LABEL_JOB: kopf.PRESENT}, registry=registry)
    async def job_pods(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> Any:
        view = pod_view(body)
        return {(namespace, labels[LABEL_JOB]): view} if view is not None else None

    @kopf.timer(GROUP, VERSION, PLURAL, id="reconcile", interval=config.poll_interval_seconds,
                backoff=config.poll_interval_seconds, registry=registry)
    async def reconcile_job(body: kopf.Body, memo: kopf.Memo, namespace: str, name: str,
                            job_pods: kopf.Index[Any, Any], logger: logging.Logger, **_: Any) -> None:
        with memo.runtime.metrics.reconcile_seconds.time():
            try:
                await reconcile(body, memo, job_pods.get((namespace, name), []), logger)
            except KubeError as exc:
                raise kopf.TemporaryError(str(exc), delay=config.poll_interval_seconds) from exc

    @kopf.on.event(GROUP, VERSION, PLURAL, id="phases", registry=registry)
    async def track_phase(type: str, body: kopf.Body, memo: kopf.Memo, namespace: str, name: str, **_: Any) -> None:
        memo.runtime.metrics.job_seen(namespace, name, (body.get("status") or {}).get("phase"),
                                      deleted=type == "DELETED")

    if config.webhook is not None:
        @kopf.on.validate(GROUP, VERSION, PLURAL, id=VALIDATING_WEBHOOK_ID, operations=["CREATE", "UPDATE"],
                          registry=registry)
        def validate(operation: str, new: Any, old: Any, memo: kopf.Memo, **_: Any) -> None:
            errors = admission_errors(operation, new, old)
            if errors:
                memo.runtime.metrics.admission_refusals.labels(operation).inc()
                raise kopf.AdmissionError(admission_message(errors), code=422)

    return registry
