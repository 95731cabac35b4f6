"""Semantic rules the schema cannot express: relations between fields, and features not built yet.

Each rule is a small function `JobSpec -> list[FieldError]`; `semantic_errors` runs them all so
a user sees every problem at once. A field whose feature is not built yet is refused here with
"not supported yet" rather than silently ignored.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from urllib.parse import urlparse

from fedkube.secure import DEFAULT_CLIP_RANGE, min_bits, neighbourhood, safe_min_threshold
from fedkube.spec.errors import FieldError
from fedkube.spec.model import JobSpec, camel
from fedkube.spec.quantities import resource_rules
from fedkube.spec.sources import S3_BUCKET, source_rules

SUPPORTED_SECURE_AGGREGATION = {"none", "secagg+", "ckks"}
# Strategies that need every client's update in plaintext (a sum is not enough).
ROBUST_STRATEGIES = {"median", "trimmedmean", "krum"}
# Strategies that step from the mean of the summed updates: client-level DP noises that sum.
SUM_STRATEGIES = {"fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad"}
# Strategies whose server step is a plain weighted mean (FedProx changes only the client loss).
CKKS_STRATEGIES = {"fedavg", "fedprox"}
# Parameters that only mean something to some strategies.
STRATEGY_PARAMETERS = {
    "mu": {"fedprox"},
    "beta1": {"fedadam", "fedyogi", "fedadagrad"},
    "beta2": {"fedadam", "fedyogi"},
    "tau": {"fedadam", "fedyogi", "fedadagrad"},
    "trim_beta": {"trimmedmean"},
    "byzantine": {"krum"},
    "multi_krum": {"krum"},
}


def _not_yet(path: str, what: str) -> FieldError:
    return FieldError(path, f"{what} is not supported yet")


def sample_size(spec: JobSpec) -> int:
    """Clients sampled per round when all partitions are connected."""
    clients = spec.clients
    if clients.per_round is not None:
        return clients.per_round
    return max(1, math.ceil(clients.fraction * spec.data.partitions))


def quorum_rules(spec: JobSpec) -> list[FieldError]:
    errors = []
    clients, partitions = spec.clients, spec.data.partitions
    if clients.min_available > partitions:
        errors.append(FieldError(
            "spec.clients.minAvailable",
            f"{clients.min_available} exceeds spec.data.partitions ({partitions})"))
    if clients.per_round is not None and clients.per_round > partitions:
        errors.append(FieldError(
            "spec.clients.perRound", f"{clients.per_round} exceeds spec.data.partitions ({partitions})"))
    elif clients.min_available <= partitions and sample_size(spec) < clients.min_available:
        field = "spec.clients.perRound" if clients.per_round is not None else "spec.clients.fraction"
        errors.append(FieldError(
            field, f"samples {sample_size(spec)} clients a round, fewer than "
                   f"spec.clients.minAvailable ({clients.min_available}), so no round could complete"))
    return errors


def partition_reference_rules(spec: JobSpec) -> list[FieldError]:
    """Overrides and data sources may only name partitions that exist, each at most once."""
    errors = []
    groups = [("spec.template.overrides", [o.partitions for o in spec.template.overrides]),
              ("spec.data.sources", [s.partitions for s in spec.data.sources])]
    for base, lists in groups:
        seen: set[int] = set()
        for i, partitions in enumerate(lists):
            for j, p in enumerate(partitions):
                path = f"{base}[{i}].partitions[{j}]"
                if p >= spec.data.partitions:
                    errors.append(FieldError(
                        path, f"partition {p} does not exist (spec.data.partitions is {spec.data.partitions})"))
                elif p in seen:
                    errors.append(FieldError(path, f"partition {p} is already named by an earlier entry"))
                seen.add(p)
    return errors


def strategy_rules(spec: JobSpec) -> list[FieldError]:
    strategy = spec.strategy
    errors = []
    for param, users in STRATEGY_PARAMETERS.items():
        if getattr(strategy, param) is not None and strategy.name not in users:
            errors.append(FieldError(
                f"spec.strategy.{camel(param)}",
                f"only used by {', '.join(sorted(users))}, not by {strategy.name!r}"))
    mode = spec.secure_aggregation.mode
    if strategy.exact_sum and (strategy.name in ROBUST_STRATEGIES or mode == "ckks"):
        keeps = f"{strategy.name!r} keeps every update" if mode != "ckks" else "ckks sums ciphertexts approximately"
        errors.append(FieldError("spec.strategy.exactSum", f"only used where the aggregator sums plaintext "
                                                           f"updates; {keeps}, so leave it false"))
    if strategy.name in ROBUST_STRATEGIES and mode != "none":
        errors.append(FieldError(
            "spec.strategy.name", f"{strategy.name!r} compares individual updates, which secure aggregation "
                                  f"(spec.secureAggregation.mode {mode!r}) hides; use a linear strategy or "
                                  f"mode 'none'"))
    if strategy.name == "krum":
        errors += _krum_rules(spec)
    return errors


def _krum_rules(spec: JobSpec) -> list[FieldError]:
    """Krum's guarantee needs n > 2f + 2 updates; the smallest round that completes has minAvailable."""
    f, quorum = spec.strategy.byzantine or 0, spec.clients.min_available
    errors = []
    if quorum <= 2 * f + 2:
        errors.append(FieldError(
            "spec.strategy.byzantine", f"Krum tolerating {f} Byzantine clients needs more than {2 * f + 2} updates "
                                       f"a round; spec.clients.minAvailable is {quorum}"))
    if spec.strategy.multi_krum is not None and spec.strategy.multi_krum > quorum - f:
        errors.append(FieldError(
            "spec.strategy.multiKrum", f"{spec.strategy.multi_krum} exceeds the {quorum - f} honest updates a round "
                                       f"may hold (spec.clients.minAvailable {quorum} minus byzantine {f})"))
    return errors


def compression_rules(spec: JobSpec) -> list[FieldError]:
    compression, mode = spec.compression, spec.secure_aggregation.mode
    errors = []
    if compression.ratio is not None and compression.kind != "topk":
        errors.append(FieldError("spec.compression.ratio", f"only used by topk, not by {compression.kind!r}"))
    if compression.kind != "none" and mode != "none":
        errors.append(FieldError(
            "spec.compression.kind", f"{compression.kind!r} compresses plaintext updates; secure aggregation "
                                     f"(spec.secureAggregation.mode {mode!r}) sends masked ones"))
    return errors


def privacy_rules(spec: JobSpec) -> list[FieldError]:
    """Combinations under which the configured noise would not give the accounted guarantee."""
    privacy = spec.privacy
    if privacy is None:
        return []
    errors = []
    if privacy.level == "sample":
        if privacy.placement != "central":
            errors.append(FieldError("spec.privacy.placement", "only applies to level client: DP-SGD noise is "
                                                               "always added inside each client"))
        if privacy.adaptive_clipping is not None:
            errors.append(FieldError("spec.privacy.adaptiveClipping", "only applies to level client"))
        return errors
    partitions = spec.data.partitions
    if privacy.delta >= 1 / partitions:
        errors.append(FieldError("spec.privacy.delta", f"{privacy.delta:g} is not below 1/{partitions} "
                                 f"(spec.data.partitions): a delta that large allows revealing a whole participant"))
    if spec.strategy.name not in SUM_STRATEGIES:
        errors.append(FieldError("spec.strategy.name", f"{spec.strategy.name!r} does not aggregate a sum of updates, "
                                 f"so client-level noise and clipping lose their meaning; use one of "
                                 f"{', '.join(sorted(SUM_STRATEGIES))}, or spec.privacy.level sample"))
    if spec.secure_aggregation.mode == "secagg+":
        errors += _secagg_privacy_rules(spec)
    adaptive = privacy.adaptive_clipping
    if adaptive and adaptive.count_noise_multiplier is not None and \
            adaptive.count_noise_multiplier <= privacy.noise_multiplier:
        errors.append(FieldError("spec.privacy.adaptiveClipping.countNoiseMultiplier",
                                 f"{adaptive.count_noise_multiplier:g} must exceed spec.privacy.noiseMultiplier "
                                 f"({privacy.noise_multiplier:g}): the count's noise is part of the accounted noise"))
    if privacy.accountant == "pld" and spec.clients.sampling == "fixed" and sample_size(spec) < partitions:
        errors.append(FieldError("spec.privacy.accountant", "pld cannot account fixed-size sampling of a subset "
                                 "(sampling without replacement); use rdp, or spec.clients.sampling poisson"))
    return errors


def _secagg_privacy_rules(spec: JobSpec) -> list[FieldError]:
    """Clients clip and noise before masking; the ring must carry that noise without cutting it off."""
    privacy = spec.privacy
    assert privacy is not None
    errors = []
    if privacy.adaptive_clipping is not None:
        errors.append(FieldError("spec.privacy.adaptiveClipping", "the count of unclipped updates would travel "
                                 "outside the masked sum; use a fixed clippingNorm with secure aggregation"))
    elif privacy.placement == "distributed":
        share = privacy.noise_multiplier * privacy.clipping_norm / math.sqrt(spec.clients.min_available)
        needed = privacy.clipping_norm + 6 * share
        clip_range = spec.secure_aggregation.clip_range or DEFAULT_CLIP_RANGE
        if clip_range < needed:
            errors.append(FieldError("spec.secureAggregation.clipRange", f"{clip_range:g} would cut off the noise "
                                     f"clients add before masking; at least {needed:.3g} (clippingNorm plus six "
                                     f"standard deviations of a client's noise share)"))
    return errors


def checkpoint_rules(spec: JobSpec) -> list[FieldError]:
    """A checkpoint URI the stores accept, and S3 settings only where they can mean something."""
    checkpoint, errors = spec.checkpoint, []
    uri = urlparse(checkpoint.uri or "")
    if uri.scheme == "file" and (uri.netloc not in ("", "localhost") or not uri.path.startswith("/")):
        errors.append(FieldError("spec.checkpoint.uri", f"{checkpoint.uri!r} is not file:///absolute/path"))
    if uri.scheme == "s3" and not S3_BUCKET.fullmatch(uri.netloc):
        errors.append(FieldError("spec.checkpoint.uri", f"{uri.netloc!r} is not an S3 bucket name (3 to 63 "
                                                        "lower-case letters, digits, dots and hyphens)"))
    for field, value in (("endpointUrl", checkpoint.endpoint_url), ("secretRef", checkpoint.secret_ref)):
        if value and uri.scheme != "s3":
            errors.append(FieldError(f"spec.checkpoint.{field}", "only used with an s3:// spec.checkpoint.uri"))
    if checkpoint.endpoint_url and urlparse(checkpoint.endpoint_url).scheme not in ("http", "https"):
        errors.append(FieldError("spec.checkpoint.endpointUrl",
                                 f"{checkpoint.endpoint_url!r} is not an http:// or https:// URL"))
    return errors


def unbuilt_feature_rules(spec: JobSpec) -> list[FieldError]:
    errors = []
    if spec.secure_aggregation.mode not in SUPPORTED_SECURE_AGGREGATION:
        errors.append(_not_yet("spec.secureAggregation.mode", f"secure aggregation {spec.secure_aggregation.mode!r}"))
    return errors


def ckks_rules(spec: JobSpec) -> list[FieldError]:
    """CKKS leaves the aggregator nothing but a sum it cannot read: no server-side step on plaintext."""
    from fedkube.he.params import check_params, ckks_params  # it imports this package

    secure = spec.secure_aggregation
    if secure.mode != "ckks":
        if secure.ckks is not None:
            return [FieldError("spec.secureAggregation.ckks", f"only used with mode ckks, not {secure.mode!r}")]
        return []
    errors = check_params(ckks_params(secure.ckks))
    needs = "needs plaintext updates on the aggregator, which secureAggregation.mode ckks never has"
    if spec.strategy.name not in CKKS_STRATEGIES:
        errors.append(FieldError("spec.strategy.name", f"{spec.strategy.name!r} {needs}; use "
                                 f"{' or '.join(sorted(CKKS_STRATEGIES))}"))
    if spec.strategy.server_lr not in (None, 1.0):
        errors.append(FieldError("spec.strategy.serverLr", f"a server learning rate {needs}; leave it at 1"))
    if spec.privacy is not None:
        errors.append(FieldError("spec.privacy", f"differential privacy {needs}"))
    if spec.compression.kind != "none":
        errors.append(FieldError("spec.compression.kind", "ciphertexts do not compress; use none with ckks"))
    return errors


def secagg_neighbourhood(spec: JobSpec) -> int:
    """How many neighbours a SecAgg+ client has in a full round (SecAgg+'s O(log n) graph unless set)."""
    return neighbourhood(spec.secure_aggregation.neighbours, sample_size(spec))


def secagg_threshold(spec: JobSpec) -> int:
    """`threshold`, or the safe minimum for the job's neighbourhood when unset."""
    secure = spec.secure_aggregation
    return secure.threshold if secure.threshold is not None else safe_min_threshold(secagg_neighbourhood(spec))


def secagg_rules(spec: JobSpec) -> list[FieldError]:
    """SecAgg+'s threshold must be reachable, safe, and its ring wide enough never to wrap."""
    secure, base = spec.secure_aggregation, "spec.secureAggregation"
    if secure.mode != "secagg+":
        if secure.mode == "none":
            return [FieldError(f"{base}.{camel(name)}", "only used with secureAggregation.mode secagg+")
                    for name in ("threshold", "neighbours", "clip_range", "bits") if getattr(secure, name) is not None]
        return []
    errors = []
    k, t = secagg_neighbourhood(spec), secagg_threshold(spec)
    if t > spec.clients.min_available:
        errors.append(FieldError(f"{base}.threshold", f"{t} exceeds spec.clients.minAvailable "
                                                      f"({spec.clients.min_available}): no round could unmask"))
    if t > k:
        errors.append(FieldError(f"{base}.threshold", f"{t} exceeds the {k} neighbours each client has "
                                                      f"(spec.secureAggregation.neighbours, clients a round)"))
    elif t < safe_min_threshold(k):
        errors.append(FieldError(f"{base}.threshold",
                                 f"{t} is below the safe minimum {safe_min_threshold(k)}: a strict majority of each "
                                 f"client's {k + 1} share holders (its neighbours and itself)"))
    if secure.bits is not None and secure.bits < min_bits(spec.data.partitions):
        errors.append(FieldError(f"{base}.bits", f"{secure.bits} bits can overflow when {spec.data.partitions} "
                                                 f"clients are summed; at least {min_bits(spec.data.partitions)}"))
    return errors


SPEC_RULES: list[Callable[[JobSpec], list[FieldError]]] = [
    quorum_rules, partition_reference_rules, strategy_rules, compression_rules, privacy_rules,
    checkpoint_rules, unbuilt_feature_rules, secagg_rules, ckks_rules, source_rules, resource_rules,
]


def entrypoint_errors(entrypoint: str) -> list[FieldError]:
    """The task entrypoint must import and name a callable (needs the task's code installed)."""
    path = "spec.task.entrypoint"
    module_name, _, attr = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the user's to see, named
        return [FieldError(path, f"cannot import module {module_name!r}: {exc}")]
    factory = getattr(module, attr, None)
    if not callable(factory):
        return [FieldError(path, f"module {module_name!r} has no callable {attr!r}")]
    return []


def semantic_errors(spec: JobSpec, check_entrypoint: bool = True) -> list[FieldError]:
    errors = [e for rule in SPEC_RULES for e in rule(spec)]
    if check_entrypoint:
        errors += entrypoint_errors(spec.task.entrypoint)
    return errors
