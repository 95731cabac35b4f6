"""Model weights <-> packed CKKS ciphertexts, as the named uint8 tensors the protocol carries.

A client sends `num_examples * local_weights`, flattened and packed `slots` values per
ciphertext; the aggregate of a round is the sum of those plus the total example count in the
clear, so the next global model is `decrypt(sum) / total` and needs nothing from earlier rounds.
"""

from __future__ import annotations

import math

import numpy as np
import tenseal as ts

from fedkube.he.wire import LAYOUT, PREFIX, TOTAL_WEIGHT, ciphertext_name, decode_layout
from fedkube.weights import Weights


def encrypt_weighted(context: ts.Context, slots: int, weights: Weights, weight: float) -> Weights:
    """`weight * weights` as ciphertext tensors of `slots` values each, in the order the aggregator expects."""
    flat = np.concatenate([a.reshape(-1).astype(np.float64) for a in weights.values()])
    flat *= weight
    return {ciphertext_name(i): np.frombuffer(ts.ckks_vector(context, flat[start:start + slots]).serialize(),
                                              dtype=np.uint8)
            for i, start in enumerate(range(0, flat.size, slots))}


def decrypt_mean(context: ts.Context, encrypted: Weights) -> Weights:
    """The global model an encrypted aggregate stands for, in its own layout."""
    if not context.is_private():
        raise PermissionError("this CKKS context holds no secret key: it cannot decrypt")
    names = sorted(n for n in encrypted if n.startswith(PREFIX))
    parts = [np.asarray(ts.ckks_vector_from(context, encrypted[n].tobytes()).decrypt()) for n in names]
    flat = np.concatenate(parts) / float(encrypted[TOTAL_WEIGHT][0])
    layout = decode_layout(encrypted[LAYOUT])
    expected = sum(math.prod(s.shape) for s in layout)
    if flat.size != expected:
        raise ValueError(f"the aggregate holds {flat.size} values, its layout {expected}")
    out, start = {}, 0
    for spec in layout:
        size = math.prod(spec.shape)
        out[spec.name] = flat[start:start + size].reshape(spec.shape).astype(spec.dtype)
        start += size
    return out
