"""The job's CKKS keys: one secret context, shared by the clients and by no one else.

Clients encrypt their updates and decrypt the aggregate with it. The aggregator only adds
ciphertexts, so its context carries the parameters and nothing else: no secret key, not even
a public key.
"""

from __future__ import annotations

import os
from pathlib import Path

import tenseal as ts

from fedkube.he.params import SECRET_FILE, CkksParams


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


def public_context(params: CkksParams) -> ts.Context:
    """The aggregator's context: the parameters and nothing else.

    It is made from the job's parameters, not shipped: a context without keys is the same
    whatever keys were drawn, so the aggregator needs no key material at all (a pod has no
    Secret to mount) and can add any ciphertext made under those parameters, but decrypt none.
    """
    return load_context(public_bytes(make_context(params)))


def ensure_secret_file(directory: Path, params: CkksParams) -> Path:
    """The secret context of a local run, readable by its owner only (kept if present, for a resume)."""
    path = directory / SECRET_FILE
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(secret_bytes(make_context(params)))
    return path
