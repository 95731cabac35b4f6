"""Benchmarks against Flower (`make bench`); results go to BENCHMARKS.md."""
