"""The `fedkube` command: validate, run locally, and the aggregator / client / operator entry points.

Heavy imports (torch, grpc, kopf) happen inside each command, so `fedkube validate` is quick and
`fedkube operator` works in an image without torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fedkube import __version__, checkpoint_cli
from fedkube.spec import FederatedJob, SpecError, load_file


def _load_one(path: str, check_entrypoint: bool = True) -> FederatedJob:
    jobs = load_file(path, check_entrypoint=check_entrypoint)
    if len(jobs) != 1:
        raise SpecError([], f"{path}: expected exactly one FederatedJob, found {len(jobs)}")
    return jobs[0]


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
    return run_local(job, run_dir.resolve(), resume=args.resume)


def cmd_aggregator(args: argparse.Namespace) -> int:
    from fedkube.aggregator.main import ServeOptions, run_aggregator
    from fedkube.plan import make_plan

    job = _load_one(args.manifest)
    output_dir = Path(args.output_dir).resolve()
    plan = make_plan(job, checkpoint_uri=args.checkpoint_uri or f"file://{output_dir}/checkpoints")
    options = ServeOptions(args.host, args.port, args.status_port, output_dir,
                           Path(args.ready_file) if args.ready_file else None,
                           Path(args.termination_log) if args.termination_log else None)
    return run_aggregator(plan.aggregator, options)


def cmd_client(args: argparse.Namespace) -> int:
    from fedkube.client.main import ConnectOptions, run_client
    from fedkube.plan import make_plan

    job = _load_one(args.manifest)
    if not 0 <= args.partition < job.spec.data.partitions:
        print(f"--partition {args.partition}: the job has partitions 0..{job.spec.data.partitions - 1}",
              file=sys.stderr)
        return 2
    plan = make_plan(job).clients[args.partition]
    return run_client(plan, ConnectOptions(args.aggregator, args.reconnect_timeout))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedkube", description="Federated learning on Kubernetes or a laptop.")
    parser.add_argument("--version", action="version", version=f"fedkube {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check FederatedJob manifests; prints ok or every error with its field")
    p.add_argument("files", nargs="+")
    p.add_argument("--no-import", action="store_true", help="do not import the task entrypoint")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run a FederatedJob locally: an aggregator and one client process per partition")
    p.add_argument("file")
    p.add_argument("--output-dir", help="run directory (default runs/<metadata.name>)")
    p.add_argument("--resume", action="store_true", help="keep the run directory's checkpoints and continue")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("aggregator", help="serve a job's rounds (what the aggregator pod runs)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=7070)
    p.add_argument("--status-port", type=int, default=8080)
    p.add_argument("--output-dir", default="/var/run/fedkube")
    p.add_argument("--checkpoint-uri", help="overrides spec.checkpoint.uri")
    p.add_argument("--ready-file", help="write the bound ports here as JSON once serving")
    p.add_argument("--termination-log", help="write the final status document here (a pod's termination message)")
    p.set_defaults(func=cmd_aggregator)

    p = sub.add_parser("client", help="train one partition (what a client pod runs)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--partition", type=int, required=True)
    p.add_argument("--aggregator", required=True, help="HOST:PORT of the aggregator")
    p.add_argument("--reconnect-timeout", type=float, default=300.0)
    p.set_defaults(func=cmd_client)

    checkpoint_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["operator"]:
        from fedkube_operator.main import main as operator_main

        return operator_main(argv[1:])
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return args.func(args)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
