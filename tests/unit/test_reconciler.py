"""reconciler.with_unseen: pods created but not yet seen by the watch are not created twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fedkube_operator.names import AGGREGATOR, Slot
from fedkube_operator.observe import PodView
from fedkube_operator.reconciler import UNSEEN_GRACE, with_unseen

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def view(slot: Slot, phase: str = "Pending", created: datetime = NOW) -> PodView:
    return PodView(slot.pod_name("j", 0), slot, 0, phase, owner_uid="u", created=created)


def test_created_pods_count_until_the_index_shows_them() -> None:
    unseen = {v.name: v for v in (view(AGGREGATOR), view(Slot(0)), view(Slot(1)))}
    indexed = (view(AGGREGATOR, "Running"),)
    pods = with_unseen(indexed, unseen, NOW + timedelta(seconds=1))
    assert [(p.name, p.phase) for p in pods] == [("j-aggregator", "Running"), ("j-client-0", "Pending"),
                                                  ("j-client-1", "Pending")]
    assert set(unseen) == {"j-client-0", "j-client-1"}  # the aggregator is the index's now


def test_a_pod_the_watch_never_delivers_is_forgotten_after_the_grace() -> None:
    unseen = {"j-client-0": view(Slot(0))}
    assert with_unseen((), unseen, NOW + UNSEEN_GRACE + timedelta(seconds=1)) == ()
    assert unseen == {}
