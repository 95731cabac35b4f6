"""How an encrypted model travels as named tensors (no HE library needed to recognise one).

An encrypted aggregate is self-describing: beside the ciphertexts it carries the total example
weight and the plaintext model's layout (names, dtypes, shapes; no values), so whoever holds the
secret key can turn it back into weights without the task's code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from fedkube.protocol.tensors import TensorSpec

PREFIX = "ckks/"
TOTAL_WEIGHT = "ckks.total_weight"
LAYOUT = "ckks.layout"


def ciphertext_name(index: int) -> str:
    return f"{PREFIX}{index:06d}"


def is_encrypted(weights: Mapping[str, object]) -> bool:
    return TOTAL_WEIGHT in weights


def encode_layout(specs: list[TensorSpec]) -> np.ndarray:
    text = json.dumps([[s.name, s.dtype, list(s.shape)] for s in specs])
    return np.frombuffer(text.encode(), dtype=np.uint8)


def decode_layout(array: np.ndarray) -> list[TensorSpec]:
    return [TensorSpec(name, dtype, tuple(shape)) for name, dtype, shape in json.loads(array.tobytes())]
