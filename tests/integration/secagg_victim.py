"""A real `fedkube client` process that SIGKILLs itself at a SecAgg+ step of a round with N participants.

Run as `python secagg_victim.py STEP N client ...args`: STEP is `after-masking` (its masked
vector was accepted, it never reveals shares) or `after-sharing` (it shared keys, it never sends
a masked vector); it dies in the first round with N participants and takes part normally before.
Everything else is the product's own client, unchanged.
"""

from __future__ import annotations

import os
import signal
import sys

from fedkube import cli
from fedkube.client import secagg


def main() -> int:
    step, participants, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    method = {"after-masking": "unmask", "after-sharing": "masked_update"}[step]
    original = getattr(secagg.SecAggParticipant, method)

    def die_in_a_full_round(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if len(self.session.setup.participants) == participants:
            print(f"victim: SIGKILL {step} in round {self.info.round}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)

    setattr(secagg.SecAggParticipant, method, die_in_a_full_round)
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
