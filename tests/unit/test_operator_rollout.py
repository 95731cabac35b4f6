"""rollout: slow-start batches, progress fields and the operator-wide pod creation rate."""

from __future__ import annotations

import pytest

from fedkube_operator.rollout import PodRate, batch_sizes, progress


@pytest.mark.parametrize(("count", "limit", "sizes"), [
    (0, 50, []),
    (1, 50, [1]),
    (9, 50, [1, 2, 4, 2]),
    (9, 3, [1, 2, 3, 3]),
    (1001, 50, [1, 2, 4, 8, 16, 32] + [50] * 18 + [38]),
    (5, 1, [1] * 5),
])
def test_batches_double_from_one_up_to_the_limit_and_cover_every_pod(count: int, limit: int,
                                                                     sizes: list[int]) -> None:
    assert batch_sizes(count, limit) == sizes
    assert sum(batch_sizes(count, limit)) == count


def test_progress_says_how_many_of_how_many() -> None:
    assert progress(350, 1001) == {"podsCreated": 350, "podsDesired": 1001,
                                   "message": "creating pods: 350 of 1001 created"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pod_rate_allows_a_burst_then_spaces_creations_out() -> None:
    clock = Clock()
    rate = PodRate(10, clock)
    assert rate.delay(10) == 0.0  # a full bucket: one second's worth at once
    assert rate.delay(5) == pytest.approx(0.5)  # then each pod waits its turn
    assert rate.delay(5) == pytest.approx(1.0)  # reservations queue behind each other
    clock.now += 10.0  # a quiet spell refills the bucket, but never beyond one burst
    assert rate.delay(10) == 0.0
    assert rate.delay(1) == pytest.approx(0.1)


def test_a_zero_rate_never_waits() -> None:
    rate = PodRate(0, Clock())
    assert all(rate.delay(1000) == 0.0 for _ in range(3))
