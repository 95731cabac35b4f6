"""CKKS parameters for `secureAggregation.mode: ckks`: safe defaults and the checks behind them.

Aggregation only adds ciphertexts, so one data modulus above the scale is enough; the defaults
(N = 8192, scale 2^40, moduli 60/40/60 bits) give 128-bit security by the Homomorphic
Encryption Standard's bounds and ~1e-7 relative error on sums of model weights. This module
imports no HE library, so `fedkube validate` and the operator can check a manifest without it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedkube.spec.errors import FieldError
from fedkube.spec.model import CkksSpec

FIELD = "spec.secureAggregation.ckks"
SECRET_FILE = "ckks-secret.ctx"  # the job's secret context, as clients find it
DEFAULT_DEGREE = 8192
DEFAULT_SCALE_BITS = 40
DEFAULT_COEFF_MOD_BITS = (60, 40, 60)
SMALL_COEFF_MOD_BITS = (60, 49)  # N = 4096 allows 109 bits in all
# Largest total coefficient-modulus size with 128-bit classical security (HE Standard, 2018).
MAX_COEFF_MOD_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
# Headroom kept between the scale and the first modulus: sums of example-weighted model
# weights must stay below 2^(first - scale) or decryption wraps around.
MIN_HEADROOM_BITS = 20


@dataclass(frozen=True)
class CkksParams:
    poly_modulus_degree: int = DEFAULT_DEGREE
    scale_bits: int = DEFAULT_SCALE_BITS
    coeff_mod_bits: tuple[int, ...] = DEFAULT_COEFF_MOD_BITS

    @property
    def slots(self) -> int:
        """Values packed into one ciphertext."""
        return self.poly_modulus_degree // 2


def ckks_params(spec: CkksSpec | None) -> CkksParams:
    """The spec's parameters with defaults filled in (not yet checked: see `check_params`)."""
    spec = spec or CkksSpec()
    degree = spec.poly_modulus_degree or DEFAULT_DEGREE
    scale = spec.scale_bits or DEFAULT_SCALE_BITS
    moduli = tuple(spec.coeff_mod_bits) or (DEFAULT_COEFF_MOD_BITS if degree > 4096 else SMALL_COEFF_MOD_BITS)
    return CkksParams(degree, scale, moduli)


def secret_context_bytes(params: CkksParams) -> int:
    """An upper bound on the serialised secret context: a secret key and a two-part public key,
    each one 8-byte coefficient per slot of the ring per modulus."""
    return 3 * params.poly_modulus_degree * len(params.coeff_mod_bits) * 8


def check_params(params: CkksParams) -> list[FieldError]:
    """Every reason these parameters are insecure or cannot hold a sum, with field paths."""
    errors: list[FieldError] = []
    moduli = params.coeff_mod_bits
    if len(moduli) < 2:
        errors.append(FieldError(f"{FIELD}.coeffModBits",
                                 "needs at least 2 moduli (a data modulus and the special modulus)"))
        return errors
    limit = MAX_COEFF_MOD_BITS[params.poly_modulus_degree]
    if sum(moduli) > limit:
        errors.append(FieldError(f"{FIELD}.coeffModBits",
                                 f"total {sum(moduli)} bits exceeds {limit}, the most polyModulusDegree "
                                 f"{params.poly_modulus_degree} allows at 128-bit security"))
    if moduli[0] < params.scale_bits + MIN_HEADROOM_BITS:
        errors.append(FieldError(f"{FIELD}.scaleBits",
                                 f"scale 2^{params.scale_bits} leaves under {MIN_HEADROOM_BITS} bits of headroom "
                                 f"below the first modulus ({moduli[0]} bits): sums would wrap around"))
    return errors
