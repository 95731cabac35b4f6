"""Differential privacy: clipping, Gaussian noise, adaptive clipping, DP-SGD and the accountant.

One mechanism per module behind the `AggregatorPrivacy` interface (`base`), composed around the
job's strategy rather than built into it. `settings` is pure (the operator imports it through
the plan without torch); the runtime modules import numpy, torch, opacus and dp-accounting.
"""
