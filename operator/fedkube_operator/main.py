"""`fedkube operator`: the command line around `kopf.run()`.

Always standalone (no peering): run one replica of the operator per set of namespaces.
"""

from __future__ import annotations

import argparse
import logging

import kopf

from fedkube_operator.config import DEFAULT_IMAGE, OperatorConfig, WebhookConfig
from fedkube_operator.handlers import assemble
from fedkube_operator.render import RenderConfig
from fedkube_operator.status import Timing


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedkube operator", description=(
        "Run FederatedJobs: one aggregator pod and one client pod per partition per job, "
        "with status, events, failure handling and cleanup."))
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--namespace", "-n", action="append", metavar="NS",
                       help="serve this namespace (repeatable; glob patterns allowed)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="serve the whole cluster")
    p.add_argument("--liveness", metavar="URL",
                   help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics at http://ADDR:PORT/metrics (off unless given)")
    p.add_argument("--metrics-addr", default="0.0.0.0", metavar="ADDR", help="listen address of --metrics-port")
    p.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="text, or one JSON object per line naming the FederatedJob it is about")
    p.add_argument("--verbose", action="store_true", help="log more")
    p.add_argument("--debug", action="store_true", help="log everything, Kopf's internals included")

    jobs = p.add_argument_group("jobs")
    jobs.add_argument("--image", default=DEFAULT_IMAGE,
                      help="trainer image for pods whose template names none (default: %(default)s)")
    jobs.add_argument("--image-pull-policy", choices=["Always", "IfNotPresent", "Never"])
    jobs.add_argument("--checkpoint-volume-size", default="1Gi", metavar="QUANTITY",
                      help="size of each job's checkpoint claim for file:// checkpoints (default: %(default)s)")
    jobs.add_argument("--checkpoint-storage-class", metavar="NAME",
                      help="storage class of checkpoint claims (default: the cluster's default)")
    jobs.add_argument("--poll-interval", type=float, default=2.0, metavar="SECONDS",
                      help="how often each job is reconciled and its aggregator polled (default: %(default)s)")
    jobs.add_argument("--backoff-base", type=float, default=10.0, metavar="SECONDS",
                      help="delay before recreating a failed pod, doubled per failure (default: %(default)s)")
    jobs.add_argument("--backoff-max", type=float, default=360.0, metavar="SECONDS",
                      help="longest delay before recreating a failed pod (default: %(default)s)")
    jobs.add_argument("--api-concurrency", type=int, default=16, metavar="N",
                      help="API requests in flight at once, across all jobs (default: %(default)s)")
    jobs.add_argument("--pod-creation-rate", type=float, default=100.0, metavar="PER_SECOND",
                      help="pods created a second at most, across all jobs; each job creates its pods in "
                           "batches of up to spec.scheduling.podCreationBatch (default: %(default)s; 0: no limit)")
    jobs.add_argument("--finished-pod-grace", type=float, default=30.0, metavar="SECONDS",
                      help="how long client pods may outlive a succeeded job (default: %(default)s)")

    hook = p.add_argument_group("admission webhook (off unless --webhook-port is given)")
    hook.add_argument("--webhook-port", type=int, metavar="PORT", help="serve the validating webhook here")
    hook.add_argument("--webhook-addr", default="0.0.0.0", metavar="ADDR", help="listen address")
    hook.add_argument("--webhook-host", metavar="HOST", help="host name the API server uses to reach it")
    hook.add_argument("--webhook-service", metavar="NS/NAME",
                      help="the Service in front of the operator, for in-cluster webhook configuration")
    hook.add_argument("--webhook-service-port", type=int, default=443, metavar="PORT")
    hook.add_argument("--webhook-cert", metavar="FILE", help="TLS certificate (default: self-signed)")
    hook.add_argument("--webhook-key", metavar="FILE", help="TLS private key")
    hook.add_argument("--webhook-insecure", action="store_true", help="plain HTTP (tunnels and tests only)")
    hook.add_argument("--webhook-config", metavar="NAME",
                      help="keep a ValidatingWebhookConfiguration of this name up to date")
    return p


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    webhook = None
    if args.webhook_port is not None:
        service = None
        if args.webhook_service:
            namespace, _, name = args.webhook_service.partition("/")
            if not namespace or not name:
                raise SystemExit("--webhook-service must be NAMESPACE/NAME")
            service = (namespace, name)
        if bool(args.webhook_cert) != bool(args.webhook_key):
            raise SystemExit("--webhook-cert and --webhook-key go together")
        webhook = WebhookConfig(
            port=args.webhook_port, addr=args.webhook_addr, host=args.webhook_host, service=service,
            service_port=args.webhook_service_port, cert_file=args.webhook_cert, key_file=args.webhook_key,
            insecure=args.webhook_insecure, managed=args.webhook_config)
    return OperatorConfig(
        render=RenderConfig(image=args.image, image_pull_policy=args.image_pull_policy,
                            checkpoint_volume_size=args.checkpoint_volume_size,
                            checkpoint_storage_class=args.checkpoint_storage_class),
        timing=Timing(args.backoff_base, args.backoff_max, args.finished_pod_grace),
        poll_interval_seconds=args.poll_interval,
        api_concurrency=args.api_concurrency,
        pod_creation_rate=args.pod_creation_rate,
        webhook=webhook,
    )


class RoutinePassFilter(logging.Filter):
    """Drops the line Kopf logs for every successful reconcile pass: one per job per poll interval,
    it would be most of the log. Failures, retries and the operator's own actions stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Timer 'reconcile' succeeded."


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = config_from_args(args)
    log_format = kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN
    kopf.configure(debug=args.debug, verbose=args.verbose, log_format=log_format)
    if not args.debug:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not (args.debug or args.verbose):
        logging.getLogger("kopf.objects").addFilter(RoutinePassFilter())
    assembly = assemble(config)
    if args.metrics_port is not None:
        assembly.memo.runtime.metrics.serve(args.metrics_port, args.metrics_addr)
    kopf.run(**assembly.kwargs(), standalone=True, clusterwide=args.all_namespaces,
             namespaces=args.namespace or (), liveness_endpoint=args.liveness)
    return 0
