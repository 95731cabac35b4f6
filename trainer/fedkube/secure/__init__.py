"""Security mechanisms: per-job mutual TLS material and SecAgg+ secure aggregation.

This package file stays free of heavy imports, so the CLI can name the default paths
without loading `cryptography`.
"""

from pathlib import Path

DEFAULT_TLS_DIR = Path("/etc/fedkube/tls")
