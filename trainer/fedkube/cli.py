"""The `fedkube` command: validate, run locally, and the aggregator / client / operator entry points.

Heavy imports (torch, grpc, kopf) happen inside each command, so `fedkube validate` is quick and
`fedkube operator` works in an image without torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fedkube import __version__, checkpoint_cli
from fedkube.logs import FORMATS, setup_logging
from fedkube.secure import DEFAULT_TLS_DIR
from fedkube.spec import FederatedJob, SpecError, load_file

if TYPE_CHECKING:
    from fedkube.secure.tls import Identity

TLS_HELP = "directory with ca.crt, tls.crt and tls.key for mutual TLS (unused when spec.transport.tls is false)"


def _load_one(path: str, check_entrypoint: bool = True) -> FederatedJob:
    jobs = load_file(path, check_entrypoint=check_entrypoint)
    if len(jobs) != 1:
        raise SpecError([], f"{path}: expected exactly one FederatedJob, found {len(jobs)}")
    return jobs[0]


def cmd_validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        try:
            jobs = load_file(path, check_entrypoint=not args.no_import)
        except SpecError as exc:
            print(exc, file=sys.stderr)
            failed = True
            continue
        for job in jobs:
            print(f"{path}: {job.name}: ok")
    return 1 if failed else 0


def cmd_run(args: argparse.Namespace) -> int:
    from fedkube.launcher import run_local

    job = _load_one(args.file)
    run_dir = Path(args.output_dir) if args.output_dir else Path("runs") / job.name
    code = run_local(job, run_dir.resolve(), resume=args.resume, log_format=args.log_format)
    if args.report and (run_dir / "metrics.json").exists():
        report_code = _report(str(run_dir), None)
        code = code or report_code
    return code


def _report(source: str, output: str | None) -> int:
    from fedkube.report import ReportSourceError, default_output, load_run, write_report
    from fedkube.stores import StoreError

    try:
        record = load_run(source)
        written = write_report(record, Path(output) if output else default_output(source, record))
    except (ReportSourceError, StoreError, RuntimeError) as exc:
        print(f"fedkube report: {exc}", file=sys.stderr)
        return 1
    print(f"report of {record.job} ({len(record.history)} rounds): {written[0]}")
    for path in written[1:]:
        print(f"  {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    return _report(args.source, args.output)


def _tls_identity(job: FederatedJob, tls_dir: str) -> Identity | None:
    """The process's mTLS material, or None when the spec turns TLS off (the servers then warn loudly)."""
    from fedkube.secure.tls import Identity

    if job.spec.transport.tls is False:
        return None
    return Identity.read(Path(tls_dir))


def cmd_aggregator(args: argparse.Namespace) -> int:
    from fedkube.aggregator.main import ServeOptions, run_aggregator
    from fedkube.malloc import keep_freed_memory
    from fedkube.plan import make_plan

    keep_freed_memory()

    job = _load_one(args.manifest)
    output_dir = Path(args.output_dir).resolve()
    plan = make_plan(job, checkpoint_uri=args.checkpoint_uri or f"file://{output_dir}/checkpoints")
    options = ServeOptions(args.host, args.port, args.status_port, args.metrics_port, output_dir,
                           Path(args.ready_file) if args.ready_file else None,
                           Path(args.termination_log) if args.termination_log else None,
                           tls=_tls_identity(job, args.tls_dir))
    return run_aggregator(plan.aggregator, options)


def cmd_client(args: argparse.Namespace) -> int:
    from fedkube.client.main import ConnectOptions, run_client
    from fedkube.malloc import keep_freed_memory
    from fedkube.plan import make_plan

    keep_freed_memory()

    job = _load_one(args.manifest)
    if not 0 <= args.partition < job.spec.data.partitions:
        print(f"--partition {args.partition}: the job has partitions 0..{job.spec.data.partitions - 1}",
              file=sys.stderr)
        return 2
    plan = make_plan(job).clients[args.partition]
    return run_client(plan, ConnectOptions(args.aggregator, args.reconnect_timeout,
                                           tls=_tls_identity(job, args.tls_dir),
                                           ckks_context=Path(args.ckks_context) if args.ckks_context else None))


def _logging_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    """Logging flags, accepted before or after the command name (`fedkube run --log-format json`)."""
    level, fmt = ("info", "text") if top_level else (argparse.SUPPRESS, argparse.SUPPRESS)
    parser.add_argument("--log-level", default=level, choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default=fmt, choices=FORMATS,
                        help="text, or one JSON object per line; both name the job, round and partition")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedkube", description="Federated learning on Kubernetes or a laptop.")
    parser.add_argument("--version", action="version", version=f"fedkube {__version__}")
    _logging_options(parser, top_level=True)
    common = argparse.ArgumentParser(add_help=False)
    _logging_options(common, top_level=False)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", parents=[common],
                       help="check FederatedJob manifests; prints ok or every error with its field")
    p.add_argument("files", nargs="+")
    p.add_argument("--no-import", action="store_true", help="do not import the task entrypoint")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", parents=[common],
                       help="run a FederatedJob locally: an aggregator and one client process per partition")
    p.add_argument("file")
    p.add_argument("--output-dir", help="run directory (default runs/<metadata.name>)")
    p.add_argument("--resume", action="store_true", help="keep the run directory's checkpoints and continue")
    p.add_argument("--report", action="store_true", help="write `fedkube report` into RUN_DIR/report at the end")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("aggregator", parents=[common], help="serve a job's rounds (what the aggregator pod runs)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=7070)
    p.add_argument("--status-port", type=int, default=8080, help="GET /status, /healthz and /metrics")
    p.add_argument("--metrics-port", type=int, default=9090, help="GET /metrics for Prometheus (also /status)")
    p.add_argument("--output-dir", default="/var/run/fedkube")
    p.add_argument("--checkpoint-uri", help="overrides spec.checkpoint.uri")
    p.add_argument("--ready-file", help="write the bound ports here as JSON once serving")
    p.add_argument("--termination-log", help="write the final status document here (a pod's termination message)")
    p.add_argument("--tls-dir", default=str(DEFAULT_TLS_DIR), help=TLS_HELP)
    p.set_defaults(func=cmd_aggregator)

    p = sub.add_parser("client", parents=[common], help="train one partition (what a client pod runs)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--partition", type=int, required=True)
    p.add_argument("--aggregator", required=True, help="HOST:PORT of the aggregator")
    p.add_argument("--reconnect-timeout", type=float, default=300.0)
    p.add_argument("--tls-dir", default=str(DEFAULT_TLS_DIR), help=TLS_HELP)
    p.add_argument("--ckks-context", default=os.environ.get("FEDKUBE_CKKS_CONTEXT"),
                   help="the job's secret CKKS context (secureAggregation.mode ckks)")
    p.set_defaults(func=cmd_client)

    p = sub.add_parser("report", parents=[common],
                       help="PNG plots and a Markdown summary of a run directory or a checkpoint URI")
    p.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT_URI",
                   help="a run directory (runs/NAME), or file:// or s3:// checkpoints (root or round folder)")
    p.add_argument("--output", "-o", help="folder for the report (default RUN_DIR/report, else ./report-JOB)")
    p.set_defaults(func=cmd_report)

    checkpoint_cli.add_parser(sub, [common])
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["operator"]:
        from fedkube_operator.main import main as operator_main

        return operator_main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        return args.func(args)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
