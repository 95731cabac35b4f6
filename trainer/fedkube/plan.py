"""spec -> JobPlan: a pure function that decides what runs where, with no I/O.

The local launcher and the Kubernetes operator both start from the same plan, so a manifest
trains the same way on a laptop and in a cluster. Every process of a job (aggregator and
clients) receives the validated manifest and derives its own part of the plan from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from fedkube.privacy.settings import PrivacySettings, privacy_settings
from fedkube.spec import FederatedJob, sample_size
from fedkube.spec.model import (
    CheckpointSpec,
    CompressionSpec,
    DataSourceSpec,
    OptimizerSpec,
    PartitionerSpec,
    PodTemplateSpec,
    SecureAggregationSpec,
    StrategySpec,
    TaskSpec,
)
from fedkube.spec.sources import source_for

GRPC_PORT = 7070
STATUS_PORT = 8080
METRICS_PORT = 9090


@dataclass(frozen=True)
class AggregatorPlan:
    """What the aggregator needs to run rounds."""

    job: str
    rounds: int
    seed: int
    task: TaskSpec
    strategy: StrategySpec
    checkpoint: CheckpointSpec
    num_partitions: int
    min_available: int
    clients_per_round: int
    sampling: str
    round_timeout_seconds: float
    join_timeout_seconds: float
    max_concurrent_streams: int
    pod: PodTemplateSpec
    privacy: PrivacySettings | None = None
    compression: CompressionSpec = CompressionSpec()
    secure_aggregation: SecureAggregationSpec = SecureAggregationSpec()
    # The validated manifest, kept in checkpoints so a report can show the configuration.
    manifest: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class TrainSettings:
    """How a client trains locally each round; sent with the round's instructions."""

    local_epochs: int
    batch_size: int
    optimizer: OptimizerSpec


@dataclass(frozen=True)
class ClientPlan:
    """What the client for one partition needs: its data slice, its training settings, its pod."""

    job: str
    partition: int
    num_partitions: int
    partitioner: PartitionerSpec
    task: TaskSpec
    train: TrainSettings
    seed: int
    pod: PodTemplateSpec
    strategy: StrategySpec = StrategySpec()        # FedProx and SCAFFOLD change local training
    compression: CompressionSpec = CompressionSpec()
    secure_aggregation: SecureAggregationSpec = SecureAggregationSpec()
    privacy: PrivacySettings | None = None
    rewind_rounds: int = 1  # how many rounds a resumed aggregator may ask again: spec.checkpoint.everyRounds
    source: DataSourceSpec | None = None  # this partition's own data source, resolved; None: the partitioner


@dataclass(frozen=True)
class JobPlan:
    name: str
    namespace: str
    aggregator: AggregatorPlan
    clients: tuple[ClientPlan, ...]
    manifest: dict[str, Any]
    tls: bool = True  # mutual TLS; off only when spec.transport.tls is explicitly false


def client_pod_template(job: FederatedJob, partition: int) -> PodTemplateSpec:
    """`spec.template.client` with the overrides that name this partition applied in order."""
    pod = job.spec.template.client
    for override in job.spec.template.overrides:
        if partition in override.partitions:
            changes = {k: getattr(override, k) for k in
                       ("image", "resources", "node_selector", "affinity", "priority_class_name")
                       if getattr(override, k) is not None}
            if override.tolerations:
                changes["tolerations"] = override.tolerations
            pod = replace(pod, **changes)
    return pod


def make_plan(job: FederatedJob, checkpoint_uri: str | None = None) -> JobPlan:
    """The whole job's plan. `checkpoint_uri` fills in `spec.checkpoint.uri` when it is unset."""
    spec = job.spec
    checkpoint = spec.checkpoint
    if checkpoint.uri is None and checkpoint_uri is not None:
        checkpoint = replace(checkpoint, uri=checkpoint_uri)
    privacy = None if spec.privacy is None else privacy_settings(
        spec.privacy, spec.clients.sampling, spec.data.partitions, sample_size(spec), spec.clients.min_available,
        masked=spec.secure_aggregation.mode != "none")
    aggregator = AggregatorPlan(
        job=job.name,
        rounds=spec.rounds,
        seed=spec.seed,
        task=spec.task,
        strategy=spec.strategy,
        checkpoint=checkpoint,
        num_partitions=spec.data.partitions,
        min_available=spec.clients.min_available,
        clients_per_round=sample_size(spec),
        sampling=spec.clients.sampling,
        round_timeout_seconds=spec.clients.round_timeout_seconds,
        join_timeout_seconds=spec.clients.join_timeout_seconds,
        max_concurrent_streams=spec.transport.max_concurrent_streams,
        pod=spec.template.aggregator,
        privacy=privacy,
        compression=spec.compression,
        secure_aggregation=spec.secure_aggregation,
        manifest=job.manifest,
    )
    train = TrainSettings(spec.clients.local_epochs, spec.clients.batch_size, spec.clients.optimizer)
    clients = tuple(
        ClientPlan(
            job=job.name,
            partition=p,
            num_partitions=spec.data.partitions,
            partitioner=spec.data.partitioner,
            task=spec.task,
            train=train,
            seed=spec.seed,
            pod=client_pod_template(job, p),
            strategy=spec.strategy,
            compression=spec.compression,
            secure_aggregation=spec.secure_aggregation,
            privacy=privacy,
            rewind_rounds=spec.checkpoint.every_rounds,
            source=source_for(spec, p),
        )
        for p in range(spec.data.partitions)
    )
    return JobPlan(job.name, job.namespace, aggregator, clients, job.manifest, tls=spec.transport.tls is not False)
