"""The job's CKKS key pair: a secret context for clients, a public one for the aggregator.

The aggregator only adds ciphertexts, so its context carries the parameters and nothing else:
no secret key, not even a public key. Clients share one secret context, made once per job;
with it they encrypt their updates and decrypt the aggregate into the next global model.
"""

from __future__ import annotations

import os
from pathlib import Path

import tenseal as ts

from fedkube.he.params import CkksParams

SECRET_FILE = "ckks-secret.ctx"
PUBLIC_FILE = "ckks-public.ctx"


def make_context(params: CkksParams) -> ts.Context:
    context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=params.poly_modulus_degree,
                         coeff_mod_bit_sizes=list(params.coeff_mod_bits), n_threads=1)
    context.global_scale = 2.0 ** params.scale_bits
    return context


def secret_bytes(context: ts.Context) -> bytes:
    """What client pods mount: parameters, public and secret key (Galois and relinearisation
    keys are left out: summing needs neither)."""
    return context.serialize(save_public_key=True, save_secret_key=True,
                             save_galois_keys=False, save_relin_keys=False)


def public_bytes(context: ts.Context) -> bytes:
    """What the aggregator gets: the parameters only."""
    return context.serialize(save_public_key=False, save_secret_key=False,
                             save_galois_keys=False, save_relin_keys=False)


def load_context(data: bytes) -> ts.Context:
    return ts.context_from(data)


def read_context(path: Path) -> ts.Context:
    return load_context(Path(path).read_bytes())


def ensure_key_files(directory: Path, params: CkksParams) -> tuple[Path, Path]:
    """Key material for a local run, (secret path, public path), readable by the owner only.

    Existing files are kept, so a resumed run can still decrypt its checkpointed aggregate.
    """
    paths = directory / SECRET_FILE, directory / PUBLIC_FILE
    if all(p.exists() for p in paths):
        return paths
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    context = make_context(params)
    for path, data in zip(paths, (secret_bytes(context), public_bytes(context)), strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    return paths
