"""Homomorphic-encryption aggregation (`secureAggregation.mode: ckks`) with TenSEAL's CKKS.

`params` needs no HE library (manifest validation uses it); the other modules import TenSEAL.
"""
