"""Prometheus exposition read the way a scraper reads it, for tests at every level.

Parsed with prometheus_client's own parser, so a test fails on output Prometheus would refuse.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def parse_samples(text: str) -> dict[str, float]:
    """Exposition text -> {'name{k=v,...}': value}, labels sorted by name."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def scrape_metrics(port: int, host: str = "127.0.0.1") -> dict[str, float]:
    """GET http://HOST:PORT/metrics and parse it; the content type must be Prometheus text."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version="), response.headers["Content-Type"]
        return parse_samples(response.read().decode())
