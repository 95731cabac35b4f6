"""Every strategy against a small case computed by hand, and its state surviving a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedkube.client.corrections import LocalCorrections
from fedkube.compression import UpdateDecoder, build_codec
from fedkube.protocol.tensors import TensorSpec, iter_chunks, specs_of
from fedkube.spec.model import CompressionSpec, StrategySpec
from fedkube.strategies import Strategy, build_strategy
from fedkube.strategies.fedadagrad import FedAdagrad
from fedkube.strategies.fedadam import FedAdam
from fedkube.strategies.fedyogi import FedYogi
from fedkube.strategies.krum import Krum
from fedkube.strategies.scaffold import VARIATE, Scaffold


def run_round(strategy: Strategy, weights: dict, updates: list[tuple[dict, float]]) -> dict:
    """Broadcast, fold each update through the plain codec in 4-byte chunks, apply."""
    strategy.broadcast(weights)
    acc = strategy.new_round(specs_of(weights))
    for update, n in updates:
        decoder = UpdateDecoder(build_codec(CompressionSpec()), acc.specs, acc.begin(n))
        for index, spec in enumerate(acc.specs):
            offset = 0
            for chunk in iter_chunks([update[spec.name]], 4):
                decoder.feed(index, offset, chunk)
                offset += len(chunk)
        decoder.fold.commit()
    return strategy.apply(weights, acc)


def vec(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


def test_fedadam_step_matches_hand_computation_and_resumes_from_state():
    w = {"w": vec(1.0, -1.0)}
    # Two clients, 1 and 3 examples: d = (1*[0.4, -0.2] + 3*[0.0, 0.2]) / 4 = [0.1, 0.1]
    updates = [({"w": vec(0.4, -0.2)}, 1), ({"w": vec(0.0, 0.2)}, 3)]
    adam = FedAdam(server_lr=0.1, beta1=0.9, beta2=0.99, tau=0.01)
    out = run_round(adam, w, updates)
    # m = 0.1*d = 0.01; v = 0.99*tau^2 + 0.01*d^2 = 0.000099 + 0.0001 = 0.000199
    # step = 0.1 * 0.01 / (sqrt(0.000199) + 0.01) = 0.001 / 0.0241067 = 0.0414823
    np.testing.assert_allclose(out["w"], [1.0414823, -0.9585177], rtol=1e-5)
    # Round 2 with d = [0.1, 0.1] again: m = 0.9*0.01 + 0.01 = 0.019, v = 0.99*0.000199 + 0.0001 = 0.00029701
    resumed = FedAdam(server_lr=0.1, beta1=0.9, beta2=0.99, tau=0.01)
    resumed.load_state(*adam.state())
    again = run_round(resumed, out, updates)
    np.testing.assert_allclose(again["w"] - out["w"], [0.019 / (np.sqrt(0.00029701) + 0.01) * 0.1] * 2, rtol=1e-5)


def test_fedyogi_second_moment_moves_additively():
    yogi = FedYogi(server_lr=1.0, beta1=0.0, beta2=0.5, tau=0.1)
    out = run_round(yogi, {"w": vec(0.0, 0.0)}, [({"w": vec(1.0, -0.05)}, 1)])
    # v0 = tau^2 = 0.01. Coordinate 0: d^2 = 1 > v0, v = 0.01 + 0.5*1 = 0.51; step = 1/(sqrt(.51)+.1)
    # Coordinate 1: d^2 = 0.0025 < v0, v = 0.01 - 0.5*0.0025 = 0.00875; step = -0.05/(sqrt(.00875)+.1)
    np.testing.assert_allclose(out["w"], [1 / (np.sqrt(0.51) + 0.1), -0.05 / (np.sqrt(0.00875) + 0.1)], rtol=1e-5)


def test_fedadagrad_second_moment_sums_squares():
    adagrad = FedAdagrad(server_lr=0.5, beta1=0.0, tau=0.5)
    w = run_round(adagrad, {"w": vec(0.0)}, [({"w": vec(2.0)}, 1)])
    # v = 0.25 + 4 = 4.25; step = 0.5 * 2 / (sqrt(4.25) + 0.5)
    np.testing.assert_allclose(w["w"], [1.0 / (np.sqrt(4.25) + 0.5)], rtol=1e-6)
    w2 = run_round(adagrad, w, [({"w": vec(1.0)}, 1)])
    # v = 4.25 + 1 = 5.25; step = 0.5 * 1 / (sqrt(5.25) + 0.5)
    np.testing.assert_allclose(w2["w"] - w["w"], [0.5 / (np.sqrt(5.25) + 0.5)], rtol=1e-5)


@pytest.mark.parametrize("name, spec, expected", [
    # Per coordinate, values [1, 2, 3, 100] with weights that robust rules must ignore.
    ("median of four", StrategySpec(name="median"), [2.5, -2.5]),
    ("trimmed mean cuts one each end", StrategySpec(name="trimmedmean", trim_beta=0.25), [2.5, -2.5]),
    ("trimmed mean cutting nothing is the mean", StrategySpec(name="trimmedmean", trim_beta=0.1), [26.5, -26.5]),
])
def test_coordinate_wise_rules(name, spec, expected):
    updates = [({"w": vec(v, -v)}, n) for v, n in [(1, 1), (2, 1), (3, 1), (100, 1000)]]
    out = run_round(build_strategy(spec, 4), {"w": vec(0.0, 0.0)}, updates)
    np.testing.assert_allclose(out["w"], expected)


def test_krum_picks_the_most_central_update_and_multi_krum_averages_the_best():
    points = [0.0, 0.1, 0.2, 0.3, 10.0]
    updates = [({"w": vec(p, 2 * p)}, 1) for p in points]
    # f = 1: each scores its n - f - 2 = 2 nearest. 0.1 and 0.2 score 5*(0.01 + 0.01) = 0.1 (distances
    # counted over both coordinates), 0.0 and 0.3 score 5*(0.01 + 0.04) = 0.25, 10.0 scores far more.
    out = run_round(Krum(byzantine=1), {"w": vec(0, 0)}, updates)
    np.testing.assert_allclose(out["w"], [0.1, 0.2], rtol=1e-6)
    multi = run_round(Krum(byzantine=1, select=2), {"w": vec(0, 0)}, updates)
    np.testing.assert_allclose(multi["w"], [0.15, 0.3], rtol=1e-6)


def test_scaffold_sends_its_variate_and_steps_it_by_participation():
    scaffold = Scaffold(num_clients=4)
    w = {"w": vec(1.0, 1.0)}
    sent = scaffold.broadcast(w)
    assert list(sent) == ["w", VARIATE + "w"] and not sent[VARIATE + "w"].any()
    # Two of four clients: deltas and variate changes weighted 1:3.
    updates = [({"w": vec(0.4, 0.0), VARIATE + "w": vec(2.0, 0.0)}, 1),
               ({"w": vec(0.0, 0.4), VARIATE + "w": vec(-2.0, 4.0)}, 3)]
    out = run_round(scaffold, w, updates)
    np.testing.assert_allclose(out["w"], [1.1, 1.3])            # 1 + [0.4, 1.2] / 4
    # c = 0 + (2/4) * ([2, 0] + 3*[-2, 4]) / 4 = 0.5 * [-1, 3]
    np.testing.assert_allclose(scaffold.c["w"], [-0.5, 1.5])
    resumed = Scaffold(num_clients=4)
    resumed.load_state(*scaffold.state())
    np.testing.assert_allclose(resumed.broadcast(out)[VARIATE + "w"], [-0.5, 1.5])


def quadratic_steps(mu: float, drift: dict | None, steps: int) -> tuple[np.ndarray, LocalCorrections]:
    """SGD (lr 0.1) on loss = 0.5 * ||w - target||^2 from w = 0, target = [1, 2]: gradient w - target."""
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    target = torch.tensor([[1.0, 2.0]])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with LocalCorrections(model, mu, drift) as corrections:
        for _ in range(steps):
            optimizer.zero_grad()
            (0.5 * ((model.weight - target) ** 2).sum()).backward()
            optimizer.step()
    return model.weight.detach().numpy().reshape(-1), corrections


def test_fedprox_term_pulls_towards_the_global_weights():
    plain, _ = quadratic_steps(0.0, None, 2)
    prox, _ = quadratic_steps(1.0, None, 2)
    # Step 1 (at the global weights the proximal gradient is zero): w1 = 0.1 * [1, 2] = [0.1, 0.2]
    # Step 2 plain:  w2 = w1 - 0.1 * (w1 - t)            = [0.19, 0.38]
    # Step 2 mu = 1: w2 = w1 - 0.1 * ((w1 - t) + 1 * w1) = [0.18, 0.36]
    np.testing.assert_allclose(plain, [0.19, 0.38], rtol=1e-6)
    np.testing.assert_allclose(prox, [0.18, 0.36], rtol=1e-6)


def test_scaffold_correction_shifts_every_gradient_and_records_the_raw_mean():
    w, corrections = quadratic_steps(0.0, {"weight": np.array([[1.0, -1.0]], np.float32)}, 2)
    # Corrected gradient (w - t) + [1, -1]: step 1 from 0 gives w1 = -0.1 * [0, -3] = [0, 0.3]
    # step 2: w2 = w1 - 0.1 * ([0, 0.3] - [1, 2] + [1, -1]) = [0, 0.3] - 0.1 * [0, -2.7] = [0, 0.57]
    np.testing.assert_allclose(w, [0.0, 0.57], rtol=1e-6)
    # Raw gradients were [-1, -2] and [-1, -1.7]: their mean is the next client variate.
    np.testing.assert_allclose(corrections.mean_gradients()["weight"], [[-1.0, -1.85]], rtol=1e-6)


def test_default_server_learning_rates():
    assert build_strategy(StrategySpec(name="fedadam"), 8).server_lr == 0.01
    assert build_strategy(StrategySpec(name="fedavg"), 8).server_lr == 1.0
    assert build_strategy(StrategySpec(name="fedyogi", server_lr=0.3), 8).server_lr == 0.3


@pytest.mark.parametrize("name", ["fedavg", "fedadam", "scaffold"])
def test_exact_sum_reaches_every_sum_a_strategy_makes(name):
    specs = [TensorSpec("w", "float32", (3,))]
    for exact in (False, True):
        assert build_strategy(StrategySpec(name=name, exact_sum=exact), 4).new_round(specs).exact is exact


def test_fedavg_steps_into_the_rounds_mean_and_leaves_the_old_weights_alone():
    weights = {"w": vec(1.0, 2.0), "h": np.array([1.0], np.float16)}
    before = {n: a.copy() for n, a in weights.items()}
    strategy = build_strategy(StrategySpec(name="fedavg", server_lr=0.5), 2)
    acc = strategy.new_round(specs_of(weights))
    fold = acc.begin(1.0)
    fold.add_dense(0, 0, vec(2.0, 4.0))
    fold.add_dense(1, 0, np.array([2.0], np.float16))
    fold.commit()
    sums = acc.sums
    out = strategy.apply(weights, acc)
    np.testing.assert_array_equal(out["w"], vec(2.0, 4.0))
    assert out["w"] is sums[0]  # the next model took the mean's buffer: no new allocation
    assert out["h"].dtype == np.float16 and out["h"].tolist() == [2.0]  # the float32 mean could not hold it
    for name in weights:
        np.testing.assert_array_equal(weights[name], before[name])
