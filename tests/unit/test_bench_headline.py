"""The README's benchmark headline, written from whichever reports a profile ran."""

from bench.common import Report
from bench.run_all import headline

OVERHEAD_COLUMNS = ["clients", "peer", "rounds", "s / round", "CPU s / round", "start-up s", "peer / fedkube clear",
                    "CPU peer / fedkube clear", "peer / fedkube mTLS", "target"]


def test_round_overhead_lines_give_ratios_plainly_however_large():
    overhead = Report("overhead", OVERHEAD_COLUMNS)
    overhead.add(8, "fedkube (transport.tls: false)", 20, 0.0066, 0.01, 5.5, 1, 1, None, "")
    overhead.add(8, "fedkube", 20, 0.0062, 0.008, 5.3, 0.94, 0.79, 1, "")
    overhead.add(8, "flower (long-running clients)", 20, 0.0134, 0.0226, 12.7, 2.04, 2.26, 2.17, ">= 3x: MISSED")
    overhead.add(8, "flower (default: process per message)", 3, 8.43, 7.12, 21.9, 1278.4, 712, 1359.2, ">= 20x: met")
    lines = headline(None, overhead, None, None)
    assert lines == [
        "- Round overhead, 8 clients: 2.04x less than flower (long-running clients) in clear text, 2.17x with "
        "fedkube's mutual TLS (0.0134 s a round against 0.0066 s (fedkube (transport.tls: false)) and 0.0062 s "
        "(fedkube))",
        "- Round overhead, 8 clients: 1278x less than flower (default: process per message) in clear text, 1359x "
        "with fedkube's mutual TLS (8.43 s a round against 0.0066 s (fedkube (transport.tls: false)) and 0.0062 s "
        "(fedkube))",
    ]
