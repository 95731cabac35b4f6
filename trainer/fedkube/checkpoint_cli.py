"""`fedkube checkpoints ls | show | export`: look into a job's checkpoints from a laptop or a pod.

Everything goes through the same Store and verification code the aggregator uses, so what the
CLI calls valid is exactly what a resuming aggregator would accept. Failures print one line that
names the object (and exit 1) rather than a traceback. numpy and safetensors are imported only
when a command runs: the parser is also built in the operator image, which has neither.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedkube.stores import Store, StoreError, open_store

FOLDER_SUFFIX = re.compile(r"/(?:round-(\d+)|(final))/?$")


def split_location(location: str) -> tuple[str, str | None]:
    """`URI[/round-N | /final]` -> (store URI, folder or None for "the latest round")."""
    from fedkube import checkpoint as ck

    match = FOLDER_SUFFIX.search(location)
    if match is None:
        return location, None
    return location[:match.start()], ck.FINAL if match.group(2) else ck.round_folder(int(match.group(1)))


def human_size(size: float) -> str:
    if size < 1000:
        return f"{size:.0f} B"
    exponent = min(3, int(math.log10(size) // 3))
    return f"{size / 1000 ** exponent:.1f} {('KB', 'MB', 'GB')[exponent - 1]}"


def _open(uri: str, endpoint_url: str | None) -> Store:
    try:
        return open_store(uri, endpoint_url)
    except ValueError as exc:
        raise StoreError(str(exc)) from exc


def _latest_folder(store: Store) -> str:
    """The folder `latest` names, else the newest round: what `show` and `export` default to."""
    from fedkube import checkpoint as ck

    pointed = ck.latest_round(store)
    if pointed is not None:
        return ck.round_folder(pointed)
    rounds = ck.list_rounds(store)
    if not rounds:
        raise StoreError(f"no checkpoints at {store.uri}")
    return ck.round_folder(rounds[-1])


def cmd_ls(args: argparse.Namespace) -> int:
    from fedkube import checkpoint as ck

    store = _open(args.uri, args.endpoint_url)
    summaries = ck.summarize_rounds(store, verify=args.verify)
    pointed = ck.latest_round(store)
    if not summaries:
        print(f"no checkpoints at {store.uri}")
    else:
        print(f"{'ROUND':>7}  {'CREATED':<25}  {'SIZE':>9}  STATUS")
    for s in summaries:
        status = "ok" if s.problem is None else f"UNUSABLE: {s.problem}"
        if s.problem is None and args.verify:
            status = "ok (verified)"
        marker = " (latest)" if s.round == pointed else ""
        print(f"{s.round:>7}  {s.created or '-':<25}  {human_size(s.size):>9}  {status}{marker}")
    if store.exists(f"{ck.FINAL}/{ck.WEIGHTS}"):
        print(f"final model: {store.url(f'{ck.FINAL}/{ck.WEIGHTS}')}")
    return 1 if args.verify and any(s.problem for s in summaries) else 0


def _tensor_summary(path: Path) -> dict[str, Any]:
    """Counts and dtypes from the safetensors header, without loading the tensors."""
    from safetensors import safe_open

    count, params, dtypes = 0, 0, set()
    with safe_open(path, framework="np") as f:
        for name in f.keys():
            piece = f.get_slice(name)
            count += 1
            params += math.prod(piece.get_shape())
            dtypes.add(piece.get_dtype())
    return {"tensors": count, "parameters": params, "dtypes": sorted(dtypes)}


def cmd_show(args: argparse.Namespace) -> int:
    from fedkube import checkpoint as ck

    uri, folder = split_location(args.location)
    store = _open(uri, args.endpoint_url)
    folder = folder or _latest_folder(store)
    with tempfile.TemporaryDirectory(prefix="fedkube-show-") as tmp:
        manifest = ck.verify_folder(store, folder, into=Path(tmp))
        model = _tensor_summary(Path(tmp) / ck.WEIGHTS)
        state = json.loads((Path(tmp) / ck.STATE).read_bytes()) if ck.STATE in manifest["objects"] else {}
    doc: dict[str, Any] = {
        "uri": store.url(folder),
        "round": manifest.get("round"),
        "created": manifest.get("created"),
        "verified": True,
        "objects": manifest["objects"],
        "model": model,
    }
    if state:
        history = state.get("history", [])
        doc["state"] = {k: v for k, v in state.items() if k != "history"}
        doc["history"] = {"rounds": [h.get("round") for h in history], "last": history[-1] if history else None}
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    print(f"{doc['uri']}: verified against its manifest")
    if doc["round"] is not None:
        print(f"round: {doc['round']}")
    print(f"created: {doc['created']}")
    for name, entry in sorted(manifest["objects"].items()):
        print(f"  {name:<22} {human_size(entry['size']):>9}  sha256 {entry['sha256']}")
    print(f"model: {model['tensors']} tensors, {model['parameters']:,} parameters ({', '.join(model['dtypes'])})")
    if state:
        last = doc["history"]["last"] or {}
        print(f"history: {len(doc['history']['rounds'])} rounds; last: "
              + ", ".join(f"{k}={last.get(k)}" for k in ("round", "status", "accuracy", "loss")))
        for key, value in sorted(doc["state"].items()):
            print(f"{key}: {json.dumps(value, sort_keys=True)[:200]}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fedkube import checkpoint as ck

    uri, folder = split_location(args.uri)
    store = _open(uri, args.endpoint_url)
    if args.round is not None:
        folder = ck.FINAL if args.round == "final" else ck.round_folder(int(args.round))
    folder = folder or _latest_folder(store)
    entry = ck.export_weights(store, folder, Path(args.to))
    source = store.url(f"{folder}/{ck.WEIGHTS}")
    print(f"{source} -> {args.to} ({human_size(entry['size'])}, sha256 {entry['sha256']})")
    if args.ckks_context:
        decrypt_export(Path(args.to), Path(args.ckks_context))
        print(f"{args.to}: decrypted with {args.ckks_context}")
    return 0


def decrypt_export(path: Path, context_path: Path) -> None:
    """Replace an exported CKKS aggregate by the plaintext model it encrypts (needs the secret key)."""
    from safetensors.numpy import load_file, save_file

    from fedkube.he.codec import decrypt_mean
    from fedkube.he.keys import read_context
    from fedkube.he.wire import is_encrypted

    encrypted = load_file(path)
    if not is_encrypted(encrypted):
        raise StoreError(f"{path} is not an encrypted CKKS aggregate; --ckks-context is only for ckks jobs")
    context = read_context(context_path)
    if not context.is_private():
        raise StoreError(f"{context_path} holds no CKKS secret key: the aggregate cannot be decrypted with it")
    save_file(decrypt_mean(context, encrypted), str(path))


def round_argument(value: str) -> str:
    if value == "final" or value.isdigit():
        return value
    raise argparse.ArgumentTypeError(f"expected a round number or 'final', not {value!r}")


def add_parser(sub: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Register `fedkube checkpoints ...` on the main parser's subcommands."""
    parser = sub.add_parser("checkpoints", help="list, inspect, verify and export a job's checkpoints")
    parser.set_defaults(func=run_command)
    commands = parser.add_subparsers(dest="checkpoints_command", required=True)
    endpoint = argparse.ArgumentParser(add_help=False)
    endpoint.add_argument("--endpoint-url", help="S3-compatible endpoint (else FEDKUBE_S3_ENDPOINT_URL, "
                                                 "AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or AWS itself)")
    shared = [endpoint, *parents]  # every subcommand also takes the main parser's common flags

    p = commands.add_parser("ls", parents=shared, help="rounds under URI, newest last, with the latest marked")
    p.add_argument("uri", help="checkpoint URI: s3://bucket/prefix or file:///path")
    p.add_argument("--verify", action="store_true",
                   help="download and check every object against its manifest (exit 1 if any round is unusable)")
    p.set_defaults(command=cmd_ls)

    p = commands.add_parser("show", parents=shared, help="verify one checkpoint and describe it")
    p.add_argument("location", help="URI (the latest round), URI/round-N or URI/final")
    p.add_argument("--json", action="store_true", help="print a JSON document")
    p.set_defaults(command=cmd_show)

    p = commands.add_parser("export", parents=shared, help="write a checkpoint's verified weights to a file")
    p.add_argument("uri", help="URI, URI/round-N or URI/final")
    p.add_argument("--round", type=round_argument, help="round number or 'final' (default: the latest round)")
    p.add_argument("--to", required=True, help="target .safetensors file")
    p.add_argument("--ckks-context", help="the job's secret CKKS context: decrypt a ckks job's encrypted aggregate")
    p.set_defaults(command=cmd_export)


def run_command(args: argparse.Namespace) -> int:
    try:
        code: int = args.command(args)
        return code
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
