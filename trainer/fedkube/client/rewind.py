"""Client state carried from round to round, made safe to train a round twice.

SCAFFOLD's control variate and top-k's residuals change every time a client trains. An
aggregator that restarts from its last checkpoint asks again for rounds the clients already
trained; training them on top of the already-advanced state would count those rounds twice, and
the resumed job would drift away from an uninterrupted one. So the client keeps a copy of that
state as it was before each recent round, and a round asked for again starts from its copy.
"""

from __future__ import annotations

import copy
import logging
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
S = TypeVar("S")


class RoundRewind(Generic[S]):
    """Copies of the carried state from before each of the last `keep` rounds trained."""

    def __init__(self, keep: int) -> None:
        self.keep = max(1, keep)
        self.before: dict[int, S] = {}

    def start(self, round_number: int, current: S) -> S:
        """The state to train `round_number` from: `current`, or its copy if that round was trained before.

        A rewind forgets the copies of later rounds: they belong to a future that did not happen.
        """
        oldest = next(iter(self.before), None)  # kept in increasing round order, so this costs O(1) a round
        if round_number in self.before:
            log.info("round %d is trained again (the aggregator resumed): rewinding carried state", round_number)
            current = self.before[round_number]
        elif oldest is not None and round_number < oldest:
            log.warning("round %d is older than any kept state (oldest: round %d): carried state cannot be "
                        "rewound, so this resumed run may differ from an uninterrupted one", round_number, oldest)
        if self.before and round_number <= next(reversed(self.before)):
            self.before = {r: s for r, s in self.before.items() if r < round_number}
        self.before[round_number] = copy.deepcopy(current)
        while len(self.before) > self.keep:
            del self.before[next(iter(self.before))]
        return current
