"""Frozen, typed views of a validated FederatedJob: nothing past the spec module sees raw dicts.

Field names are the snake_case of the CRD's camelCase keys; `from_dict` maps one to the other
generically, so the dataclasses below are the whole description of the typed spec.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    entrypoint: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PartitionerSpec:
    kind: str = "iid"
    alpha: float = 0.5
    shards_per_client: int = 2
    seed: int = 0


@dataclass(frozen=True)
class PvcSource:
    claim_name: str
    sub_path: str | None = None
    mount_path: str = "/data"


@dataclass(frozen=True)
class ObjectStoreSource:
    uri: str
    endpoint_url: str | None = None
    secret_ref: str | None = None


@dataclass(frozen=True)
class DataSourceSpec:
    partitions: tuple[int, ...] = ()  # empty: every partition
    pvc: PvcSource | None = None
    object_store: ObjectStoreSource | None = None
    path: str | None = None


@dataclass(frozen=True)
class DataSpec:
    partitions: int
    partitioner: PartitionerSpec = PartitionerSpec()
    sources: tuple[DataSourceSpec, ...] = ()


@dataclass(frozen=True)
class OptimizerSpec:
    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class ClientsSpec:
    min_available: int
    fraction: float = 1.0
    per_round: int | None = None
    sampling: str = "fixed"
    round_timeout_seconds: float = 120.0
    join_timeout_seconds: float = 300.0
    local_epochs: int = 1
    batch_size: int = 32
    optimizer: OptimizerSpec = OptimizerSpec()


@dataclass(frozen=True)
class StrategySpec:
    name: str = "fedavg"
    server_lr: float | None = None
    mu: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    tau: float | None = None
    trim_beta: float | None = None
    byzantine: int | None = None
    multi_krum: int | None = None
    exact_sum: bool = False


@dataclass(frozen=True)
class CkksSpec:
    poly_modulus_degree: int | None = None
    scale_bits: int | None = None
    coeff_mod_bits: tuple[int, ...] = ()


@dataclass(frozen=True)
class SecureAggregationSpec:
    mode: str = "none"
    threshold: int | None = None
    neighbours: int | None = None
    clip_range: float | None = None
    bits: int | None = None
    ckks: CkksSpec | None = None


@dataclass(frozen=True)
class AdaptiveClippingSpec:
    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_noise_multiplier: float | None = None


@dataclass(frozen=True)
class PrivacySpec:
    noise_multiplier: float
    clipping_norm: float
    level: str = "client"
    placement: str = "central"
    adaptive_clipping: AdaptiveClippingSpec | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"


@dataclass(frozen=True)
class CompressionSpec:
    kind: str = "none"
    ratio: float | None = None


@dataclass(frozen=True)
class TransportSpec:
    tls: bool | None = None
    max_concurrent_streams: int = 2


@dataclass(frozen=True)
class CheckpointSpec:
    uri: str | None = None
    every_rounds: int = 1
    keep_last: int = 3
    secret_ref: str | None = None
    endpoint_url: str | None = None


@dataclass(frozen=True)
class PodTemplateSpec:
    image: str | None = None
    image_pull_policy: str | None = None
    resources: dict[str, Any] | None = None
    env: tuple[dict[str, Any], ...] = ()
    node_selector: dict[str, str] | None = None
    tolerations: tuple[dict[str, Any], ...] = ()
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = None


@dataclass(frozen=True)
class OverrideSpec:
    partitions: tuple[int, ...]
    image: str | None = None
    resources: dict[str, Any] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: tuple[dict[str, Any], ...] = ()
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = None


@dataclass(frozen=True)
class TemplateSpec:
    aggregator: PodTemplateSpec = PodTemplateSpec()
    client: PodTemplateSpec = PodTemplateSpec()
    overrides: tuple[OverrideSpec, ...] = ()


@dataclass(frozen=True)
class SchedulingSpec:
    suspend: bool = False
    gang: bool = False
    gang_scheduler: str = "coscheduling"
    pending_timeout_seconds: int = 600
    pod_creation_batch: int = 50


@dataclass(frozen=True)
class JobSpec:
    """The `spec` of a FederatedJob."""

    task: TaskSpec
    data: DataSpec
    rounds: int
    clients: ClientsSpec
    seed: int = 0
    strategy: StrategySpec = StrategySpec()
    secure_aggregation: SecureAggregationSpec = SecureAggregationSpec()
    privacy: PrivacySpec | None = None
    compression: CompressionSpec = CompressionSpec()
    transport: TransportSpec = TransportSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    template: TemplateSpec = TemplateSpec()
    scheduling: SchedulingSpec = SchedulingSpec()
    backoff_limit: int = 3
    ttl_seconds_after_finished: int | None = None


@dataclass(frozen=True)
class FederatedJob:
    """A validated manifest: its identity, its typed spec, and the defaulted document it came from."""

    name: str
    namespace: str
    spec: JobSpec
    manifest: dict[str, Any] = field(compare=False, repr=False)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner, value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value)
    if origin is tuple:
        return tuple(_convert(typing.get_args(tp)[0], v) for v in value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


@functools.cache
def _type_hints(cls: Any) -> dict[str, Any]:
    """Resolved once per class: resolving string annotations costs more than building the object."""
    return typing.get_type_hints(cls)


def from_dict(cls: Any, data: dict[str, Any]) -> Any:
    """Build dataclass `cls` from a schema-valid camelCase mapping (unknown keys were refused)."""
    hints = _type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = camel(f.name)
        if key in data:
            kwargs[f.name] = _convert(hints[f.name], data[key])
    return cls(**kwargs)
