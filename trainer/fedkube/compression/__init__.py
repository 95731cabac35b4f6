"""Update compression codecs, built from `spec.compression`."""

from __future__ import annotations

from fedkube.compression.base import Codec, UpdateDecoder
from fedkube.compression.fp16 import Fp16
from fedkube.compression.int8 import Int8
from fedkube.compression.plain import Plain
from fedkube.compression.topk import DEFAULT_RATIO, TopK
from fedkube.spec.model import CompressionSpec

__all__ = ["Codec", "UpdateDecoder", "build_codec"]


def build_codec(spec: CompressionSpec) -> Codec:
    """A fresh codec; a client keeps one for the whole job (top-k's residuals live in it)."""
    if spec.kind == "none":
        return Plain()
    if spec.kind == "fp16":
        return Fp16()
    if spec.kind == "int8":
        return Int8()
    if spec.kind == "topk":
        return TopK(DEFAULT_RATIO if spec.ratio is None else spec.ratio)
    raise ValueError(f"spec.compression.kind: unknown compression {spec.kind!r}")
