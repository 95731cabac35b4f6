"""The operator's own settings (not the jobs'): filled once from the command line, then frozen."""

from __future__ import annotations

from dataclasses import dataclass, field

import fedkube
from fedkube_operator.render import RenderConfig
from fedkube_operator.status import Timing

DEFAULT_IMAGE = f"ghcr.io/fedkube/trainer:{fedkube.__version__}"


@dataclass(frozen=True)
class WebhookConfig:
    """Where the validating admission webhook listens and how the API server reaches it.

    With `service` (namespace, name) the managed ValidatingWebhookConfiguration points at that
    Service, as in-cluster webhooks must; otherwise at https://`host`:`port`.
    """

    port: int = 9443
    addr: str = "0.0.0.0"
    host: str | None = None
    service: tuple[str, str] | None = None
    service_port: int = 443
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    managed: str | None = None  # name of the ValidatingWebhookConfiguration to keep up to date


@dataclass(frozen=True)
class OperatorConfig:
    render: RenderConfig = RenderConfig(image=DEFAULT_IMAGE)
    timing: Timing = field(default_factory=Timing)
    poll_interval_seconds: float = 2.0
    probe_timeout_seconds: float = 3.0
    api_concurrency: int = 16  # API requests in flight at once, across all jobs
    pod_creation_rate: float = 100.0  # pod creations a second, across all jobs (0: no limit)
    webhook: WebhookConfig | None = None
