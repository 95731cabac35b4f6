"""Central evaluation holds no model-sized copy: it views the weights it scores, or holds no model at all."""

import numpy as np
import torch

from fedkube.aggregator.main import Evaluator
from fedkube.tasks.digits import DigitsConfig, DigitsTask
from fedkube.tasks.digits import task as digits
from fedkube.weights import get_weights, view_weights


class NoTestSet(DigitsTask):
    def load_test(self):
        return None


def test_evaluation_scores_the_given_weights_through_views_of_them():
    task = digits({})
    torch.manual_seed(0)
    model = task.build_model()
    evaluate = Evaluator(task, model)
    weights = {n: np.zeros_like(a) for n, a in get_weights(model).items()}
    zero = evaluate(weights)
    assert all(np.shares_memory(view_weights(model)[n], a) for n, a in weights.items())
    assert 0.0 <= zero["accuracy"] <= 1.0 and np.isfinite(zero["loss"])


def test_without_a_test_set_the_evaluator_keeps_no_model():
    task = NoTestSet(DigitsConfig())
    evaluate = Evaluator(task, task.build_model())
    assert evaluate.model is None and evaluate({"w": np.zeros(3, np.float32)}) == {}
