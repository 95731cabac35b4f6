"""A real `fedkube client` process that misbehaves at one SecAgg+ step: `python secagg_victim.py STEP N client ...`.

STEP `after-masking`: SIGKILL itself once its masked vector was accepted, never revealing shares;
`after-sharing`: SIGKILL itself after sharing keys, never sending a masked vector. Both strike in
the first round with N participants and take part normally before.
STEP `reveal-late`: in round N, wait a few seconds between its accepted masked vector and its
shares (once), so that the aggregator can be killed while it holds the round's masked sum.
Everything else is the product's own client, unchanged.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from fedkube import cli
from fedkube.client import secagg

REVEAL_DELAY_SECONDS = 4.0


def main() -> int:
    step, number, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    method = {"after-masking": "reveal", "after-sharing": "masked_update", "reveal-late": "reveal"}[step]
    original = getattr(secagg.SecAggParticipant, method)
    delayed: set[int] = set()

    def misbehave(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if step == "reveal-late":
            if self.info.round == number and number not in delayed:
                delayed.add(number)
                print(f"victim: revealing late in round {number}", flush=True)
                time.sleep(REVEAL_DELAY_SECONDS)
        elif len(self.session.setup.participants) == number:
            print(f"victim: SIGKILL {step} in round {self.info.round}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)

    setattr(secagg.SecAggParticipant, method, misbehave)
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
