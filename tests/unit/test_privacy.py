"""Privacy mechanisms: the accountant against dp-accounting, clipping bounds, noise statistics,
adaptive clipping on a synthetic norm stream, the budget, and the rules on privacy settings."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats
from test_spec import mutate

from fedkube.plan import make_plan
from fedkube.privacy.accountant import Accountant, RoundEvent
from fedkube.privacy.adaptive import AdaptiveClipNorm, unclipped_indicator
from fedkube.privacy.client import ClippedRelease
from fedkube.privacy.client_level import ClientLevelDP
from fedkube.privacy.clipping import clip_update, l2_norm
from fedkube.privacy.noise import add_gaussian, add_noise_share
from fedkube.privacy.sample_level import SampleLevelDP, sample_epsilon
from fedkube.privacy.settings import AdaptiveSettings, PrivacySettings
from fedkube.protocol.tensors import TensorSpec, specs_of
from fedkube.spec import SpecError, parse_manifest

NeighborRel = dp_accounting.NeighboringRelation


def make_settings(**changes) -> PrivacySettings:
    base = dict(level="client", placement="central", noise_multiplier=1.0, clipping_norm=1.0, delta=1e-5,
                target_epsilon=None, accountant="rdp", sampling="poisson", population=1000, expected_clients=100,
                min_reports=50)
    return PrivacySettings(**{**base, **changes})


def reference_epsilon(kind: str, relation, event: dp_accounting.DpEvent, rounds: int, delta: float) -> float:
    """dp-accounting's own computation, written out independently of fedkube's wiring."""
    accountant = RdpAccountant(neighboring_relation=relation) if kind == "rdp" else PLDAccountant(relation)
    accountant.compose(event, rounds)
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("kind", ["rdp", "pld"])
def test_poisson_rounds_epsilon_equals_dp_accounting(kind):
    mechanism = ClientLevelDP(make_settings(accountant=kind, noise_multiplier=1.1))
    event = dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.1))
    for round_number in (1, 2):
        entry: dict = {}
        mechanism.record(entry, {}, completed=True)
        expected = reference_epsilon(kind, NeighborRel.ADD_OR_REMOVE_ONE, event, round_number, 1e-5)
        assert mechanism.epsilon == pytest.approx(expected, rel=1e-9) and entry["epsilon"] == mechanism.epsilon
    mechanism.accountant.compose(mechanism.round_event(), 28)
    expected = reference_epsilon(kind, NeighborRel.ADD_OR_REMOVE_ONE, event, 30, 1e-5)
    assert mechanism.accountant.epsilon(1e-5) == pytest.approx(expected, rel=1e-9)


def test_fixed_size_sampling_is_accounted_without_replacement_under_replace_one():
    mechanism = ClientLevelDP(make_settings(sampling="fixed", noise_multiplier=2.0))
    for _ in range(2):
        mechanism.record({}, {}, completed=True)
    mechanism.accountant.compose(mechanism.round_event(), 18)
    # Swapping one participant moves the clipped sum by 2C: the accountant sees sigma / 2.
    expected = reference_epsilon("rdp", NeighborRel.REPLACE_ONE, dp_accounting.SampledWithoutReplacementDpEvent(
        1000, 100, dp_accounting.GaussianDpEvent(1.0)), 20, 1e-5)
    assert mechanism.accountant.epsilon(1e-5) == pytest.approx(expected, rel=1e-9)


def test_rdp_agrees_with_opacus_independent_accountant():
    """Another implementation of the same mechanism (q = 0.1, sigma = 1, 100 steps) gives the same epsilon."""
    from opacus.accountants import RDPAccountant as OpacusRdp

    opacus = OpacusRdp()
    opacus.history = [(1.0, 0.1, 100)]
    ours = Accountant("rdp", "poisson")
    ours.compose(RoundEvent(1.0, "poisson", 0.1, 1000), 100)
    assert ours.epsilon(1e-5) == pytest.approx(opacus.get_epsilon(1e-5), rel=0.02)
    assert 7.5 < ours.epsilon(1e-5) < 8.3  # the textbook value is about 7.9
    pld = Accountant("pld", "poisson")
    pld.compose(RoundEvent(1.0, "poisson", 0.1, 1000), 100)
    assert pld.epsilon(1e-5) < ours.epsilon(1e-5)  # PLD is tighter than RDP's conversion


def test_unaccounted_rounds_cost_nothing_and_state_resumes():
    mechanism = ClientLevelDP(make_settings())
    mechanism.record({}, {}, completed=False)
    assert mechanism.epsilon == 0.0
    for _ in range(3):
        mechanism.record({}, {}, completed=True)
    resumed = ClientLevelDP(make_settings())
    resumed.load_state(mechanism.state())
    assert resumed.epsilon == pytest.approx(mechanism.epsilon) and resumed.accountant.rounds == 3
    resumed.record({}, {}, completed=True)
    assert resumed.epsilon > mechanism.epsilon


def test_budget_stops_before_the_round_that_would_exceed_the_target():
    target = 3.0
    mechanism = ClientLevelDP(make_settings(target_epsilon=target, noise_multiplier=0.6))
    rounds = 0
    while mechanism.budget_exhausted() is None:
        mechanism.record({}, {}, completed=True)
        rounds += 1
    assert mechanism.epsilon <= target
    expected_next = reference_epsilon("rdp", NeighborRel.ADD_OR_REMOVE_ONE, dp_accounting.PoissonSampledDpEvent(
        0.1, dp_accounting.GaussianDpEvent(0.6)), rounds + 1, 1e-5)
    assert expected_next > target
    assert "privacy budget exhausted" in mechanism.budget_exhausted() and mechanism.status()["budgetExhausted"]


float_arrays = arrays(np.float32, st.integers(1, 50),
                      elements=st.floats(-1e4, 1e4, allow_nan=False, width=32))


@settings(max_examples=100, deadline=None)
@given(st.lists(float_arrays, min_size=1, max_size=4), st.floats(1e-3, 1e3))
def test_clipped_norm_never_exceeds_the_bound(parts, bound):
    update = {f"t{i}": a for i, a in enumerate(parts)}
    clipped, norm = clip_update(update, bound)
    assert l2_norm(clipped.values()) <= bound
    assert norm == pytest.approx(l2_norm(update.values()))
    if norm <= bound:
        assert all(np.array_equal(clipped[k], update[k]) for k in update)
    else:  # same direction, only shorter
        flat = np.concatenate([a.ravel() for a in update.values()]).astype(np.float64)
        cflat = np.concatenate([a.ravel() for a in clipped.values()]).astype(np.float64)
        assert np.allclose(cflat, flat * (l2_norm(clipped.values()) / norm), rtol=1e-4, atol=1e-6 * bound)


def assert_variance(sample: np.ndarray, variance: float) -> None:
    """Chi-square test of the sample variance at the 99.99% level (zero-mean Gaussian known)."""
    n = sample.size
    statistic = float(np.sum(sample.astype(np.float64) ** 2)) / variance
    low, high = stats.chi2.ppf([5e-5, 1 - 5e-5], n)
    assert low < statistic < high, f"variance {statistic / n * variance:.6g}, expected {variance:.6g}"
    assert abs(float(sample.mean())) < 5 * math.sqrt(variance / n)


def test_gaussian_noise_has_the_requested_variance():
    array = np.zeros(200_000, dtype=np.float32)
    add_gaussian([array], 0.37, np.random.default_rng(1))
    assert_variance(array, 0.37 ** 2)
    with pytest.raises(AssertionError):  # the test can tell a wrong scale apart
        assert_variance(array, 0.39 ** 2)


@pytest.mark.parametrize("exact", [False, True], ids=["float", "exact"])
def test_central_noise_on_the_sum_is_sigma_times_clip(exact):
    settings = make_settings(noise_multiplier=0.8, clipping_norm=2.5, sampling="fixed")
    mechanism = ClientLevelDP(settings)
    specs = [TensorSpec("w", "float32", (400, 250))]
    accumulated = mechanism.new_sum(specs, exact)
    for _ in range(3):  # three zero updates: the sum is pure noise afterwards
        fold = accumulated.begin(123.0)
        fold.add(0, 0, np.zeros(100_000, np.float32).tobytes())
        fold.commit()
    mechanism.noise_sum(accumulated)
    assert accumulated.total_weight == 3  # unweighted mean over the reports
    assert_variance(accumulated.sums[0], (0.8 * 2.5) ** 2)


def test_distributed_shares_sum_to_the_accounted_noise():
    settings = make_settings(placement="distributed", noise_multiplier=1.5, clipping_norm=0.5, min_reports=7)
    total = np.zeros(50_000, np.float32)
    rng = np.random.default_rng(3)
    for _ in range(7):
        share = {"w": np.zeros(50_000, np.float32)}
        add_noise_share(share, settings, 0.5, rng)
        assert_variance(share["w"], (1.5 * 0.5) ** 2 / 7)
        total += share["w"]
    assert_variance(total, (1.5 * 0.5) ** 2)
    central = make_settings(noise_multiplier=1.5)
    share = {"w": np.zeros(10, np.float32)}
    add_noise_share(share, central, 0.5, rng)
    assert not share["w"].any()  # central placement: clients add nothing


def test_client_release_clips_and_reports_the_indicator():
    adaptive = AdaptiveSettings(0.5, 0.2, 4.0)
    release = ClippedRelease(make_settings(adaptive=adaptive, placement="central"))
    big = {"a": np.full(100, 1.0, np.float32)}  # norm 10
    clipped, metrics = release.release(big, {"privacy": {"clippingNorm": 2.0}})
    assert l2_norm(clipped.values()) <= 2.0 and metrics["dp_unclipped"] == 0.0
    _, metrics = release.release({"a": np.full(4, 0.1, np.float32)}, {"privacy": {"clippingNorm": 2.0}})
    assert metrics["dp_unclipped"] == 1.0
    with pytest.raises(ValueError, match="no privacy settings"):
        release.release(big, {})


@pytest.mark.parametrize("exact", [False, True], ids=["float", "exact"])
def test_aggregator_clips_an_update_above_the_clip_norm_before_it_joins_the_sum(exact):
    mechanism = ClientLevelDP(make_settings(clipping_norm=1.0))
    update = {"w": np.full((10, 10), 0.05, np.float32)}  # norm 0.5
    accumulated = mechanism.new_sum(specs_of(update), exact)
    fold = accumulated.begin(1.0)
    fold.add(0, 0, update["w"].tobytes())
    fold.commit()
    assert np.array_equal(accumulated.sums[0], update["w"])  # within the bound: untouched
    rogue = accumulated.begin(1.0)
    rogue.add_dense(0, 0, np.full(50, 0.5, np.float32))  # norm 3.54, in two pieces
    rogue.add_sparse(0, np.arange(50, 100), np.full(50, 0.5, np.float32))
    rogue.commit()
    assert accumulated.count == 2
    assert l2_norm([accumulated.sums[0] - update["w"]]) <= 1.0
    assert l2_norm([accumulated.sums[0] - update["w"]]) == pytest.approx(1.0, rel=1e-5)


def test_adaptive_clipping_converges_to_the_target_quantile():
    rng = np.random.default_rng(7)
    m, quantile = 100, 0.7
    settings = make_settings(adaptive=AdaptiveSettings(quantile, 0.2, m / 10))
    clip = AdaptiveClipNorm(settings.adaptive, 0.01)  # start two orders of magnitude off
    history = []
    for _ in range(400):
        norms = rng.lognormal(mean=0.0, sigma=0.5, size=m)
        count = sum(unclipped_indicator(n, clip.norm) for n in norms) + rng.normal(0, settings.count_noise_std)
        history.append(clip.update(count, m))
    truth = float(np.exp(stats.norm.ppf(quantile) * 0.5))  # the lognormal's 0.7-quantile
    assert np.mean(history[-100:]) == pytest.approx(truth, rel=0.05)
    assert abs(np.mean(history[-100:]) - truth) < abs(history[0] - truth)


def test_count_noise_takes_its_part_of_the_noise_multiplier():
    settings = make_settings(noise_multiplier=1.0, adaptive=AdaptiveSettings(0.5, 0.2, 2.0))
    assert settings.update_noise_multiplier == pytest.approx(1 / math.sqrt(1 - 0.25))
    assert 1 / settings.update_noise_multiplier ** 2 + 1 / 2.0 ** 2 == pytest.approx(1.0)
    assert settings.count_noise_std == 1.0


def test_sample_level_ledger_matches_dp_accounting_and_projects_the_budget():
    settings = make_settings(level="sample", noise_multiplier=0.9, target_epsilon=5.0)
    mechanism = SampleLevelDP(settings)
    metrics = {"dp_sample_rate": 0.05, "dp_steps": 40.0, "dp_epsilon": 0.0}
    entry: dict = {"train_loss": 1.0}
    mechanism.record(entry, {0: metrics, 3: metrics}, completed=True)
    expected = reference_epsilon("rdp", NeighborRel.ADD_OR_REMOVE_ONE, dp_accounting.PoissonSampledDpEvent(
        0.05, dp_accounting.GaussianDpEvent(0.9)), 40, 1e-5)
    assert mechanism.epsilon == pytest.approx(expected) and "train_loss" not in entry
    assert sample_epsilon(settings, 0.05, 40) == pytest.approx(expected)
    assert mechanism.round_config(3) == {"privacy": {"priorSteps": 40}}
    rounds = 1
    while mechanism.budget_exhausted() is None:
        mechanism.record({}, {0: metrics}, completed=True)
        rounds += 1
    assert mechanism.epsilon <= 5.0 < sample_epsilon(settings, 0.05, 40 * (rounds + 1))
    resumed = SampleLevelDP(settings)
    resumed.load_state(mechanism.state())
    assert resumed.status() == mechanism.status() | {"budgetExhausted": False}


def privacy_doc(privacy: dict, **spec) -> dict:
    doc = mutate("spec.privacy", privacy)
    doc["spec"].update(spec)
    return doc


def test_plan_resolves_privacy_for_both_sides():
    doc = privacy_doc({"noiseMultiplier": 1.0, "clippingNorm": 0.5, "placement": "distributed",
                       "adaptiveClipping": {"targetQuantile": 0.6}})
    plan = make_plan(parse_manifest(doc))
    settings = plan.aggregator.privacy
    assert settings == plan.clients[3].privacy
    assert (settings.population, settings.expected_clients, settings.min_reports) == (8, 8, 6)
    assert settings.adaptive.count_noise_multiplier == 2.0  # max(8 / 10, 2 x 1.0)
    assert settings.share_fraction() == pytest.approx(1 / 6)


def test_client_level_privacy_refuses_strategies_that_do_not_sum():
    doc = privacy_doc({"noiseMultiplier": 1.0, "clippingNorm": 0.5}, strategy={"name": "median"})
    with pytest.raises(SpecError) as info:
        parse_manifest(doc)
    assert any(e.path == "spec.strategy.name" and "does not aggregate a sum" in e.message
               for e in info.value.errors)
