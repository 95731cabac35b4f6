"""Moving weights between models and arrays without model-sized copies where none is needed."""

import numpy as np
import torch

from fedkube.weights import (
    ModelState,
    float_state,
    get_weights,
    load_state,
    share_weights,
    subtract_into,
    view_state,
    view_weights,
)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))


def test_view_weights_shares_the_models_memory_and_skips_integer_buffers():
    model = _model()
    views = view_weights(model)
    assert set(views) == set(get_weights(model))  # num_batches_tracked (int64) stays out
    with torch.no_grad():
        model[0].weight.add_(1.0)
    np.testing.assert_array_equal(views["0.weight"], model[0].weight.detach().numpy())


def test_a_kept_float_state_loads_into_the_model_and_sees_its_training_round_after_round():
    model = _model()
    state = float_state(model)  # kept, as a client keeps it for the whole job
    assert "1.num_batches_tracked" not in state
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for round_number in (1, 2):
        weights = {n: np.full_like(a, float(round_number)) for n, a in get_weights(model).items()}
        load_state(state, weights)
        assert model[0].weight.requires_grad and model[0].weight.tolist() == [[float(round_number)] * 3] * 2
        model.train()
        (model(torch.randn(4, 3)) ** 2).sum().backward()  # training in place, as a task does
        optimizer.step()
        optimizer.zero_grad()
        np.testing.assert_array_equal(view_state(state)["0.weight"], model[0].weight.detach().numpy())
        assert not np.array_equal(view_state(state)["0.weight"], weights["0.weight"])


def test_a_models_state_loads_each_round_into_the_model_and_reads_back_what_it_trained():
    model = _model()
    state = ModelState(model)  # made once, as a client makes it for the whole job
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for round_number in (1, 2, 3):
        weights = {n: np.full_like(a, float(round_number)) for n, a in get_weights(model).items()}
        state.load(weights)
        assert model[0].weight.requires_grad and model[0].weight.tolist() == [[float(round_number)] * 3] * 2
        assert model[1].running_var.tolist() == [float(round_number)] * 2  # float buffers load too
        model.train()
        (model(torch.randn(4, 3)) ** 2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        read = state.read()
        assert set(read) == set(weights)  # integer buffers stay local
        np.testing.assert_array_equal(read["0.weight"], model[0].weight.detach().numpy())
        np.testing.assert_array_equal(read["1.running_mean"], model[1].running_mean.numpy())
        assert not np.array_equal(read["0.weight"], weights["0.weight"])
        read.clear()  # what a caller does with the mapping it got does not reach the next round's
    assert set(state.read()) == set(weights)


def test_share_weights_makes_the_model_view_the_arrays_and_copies_read_only_ones():
    model = _model()
    weights = {n: np.full_like(a, 2.0) for n, a in get_weights(model).items()}
    frozen = np.full_like(weights["0.bias"], 5.0)
    frozen.flags.writeable = False
    share_weights(model, {**weights, "0.bias": frozen})
    weights["0.weight"][0, 0] = 7.0  # the model sees a change made after sharing: no copy
    assert model[0].weight[0, 0].item() == 7.0
    assert model[0].bias.tolist() == [5.0, 5.0]
    assert model[0].weight.requires_grad  # the module's parameters stay parameters
    assert model.state_dict()["1.num_batches_tracked"].dtype == torch.int64


def test_subtract_into_reuses_writable_matching_buffers_only():
    local = {"a": np.array([3.0, 5.0], np.float32), "b": np.array([1.0], np.float32),
             "c": np.array([2.0], np.float64)}
    base = {"a": np.array([1.0, 1.0], np.float32), "b": np.array([4.0], np.float32),
            "c": np.array([0.5], np.float32)}
    base["b"].flags.writeable = False
    kept = dict(base)
    out = subtract_into(local, base)
    assert out["a"] is kept["a"] and out["a"].tolist() == [2.0, 4.0]
    assert out["b"] is not kept["b"] and out["b"].tolist() == [-3.0]
    assert out["c"].dtype == np.float64 and out["c"].tolist() == [1.5]  # float32 base cannot hold it
