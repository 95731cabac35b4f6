"""TEST-ONLY: the API server's garbage collector, which the emulator lacks.

Deletes every object in a namespace whose ownerReferences name an owner (by kind, name and uid)
that no longer exists: what Kubernetes does in the background after `kubectl delete fj`.
It only follows ownerReferences, so a test that sees everything vanish has shown that the
operator set them right.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

# (URL prefix, plural, kind) of everything a FederatedJob can own, owners included.
KINDS = [
    ("/api/v1", "pods", "Pod"),
    ("/api/v1", "services", "Service"),
    ("/api/v1", "configmaps", "ConfigMap"),
    ("/api/v1", "secrets", "Secret"),
    ("/api/v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    ("/apis/fedkube.io/v1alpha1", "federatedjobs", "FederatedJob"),
]


@dataclass
class GarbageCollector:
    api_url: str
    namespace: str = "default"
    poll_seconds: float = 0.3
    collected: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gc-stand-in", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> GarbageCollector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _request(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.api_url + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.collect()
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.poll_seconds)

    def collect(self) -> None:
        objects: list[tuple[str, str, dict[str, Any]]] = []
        alive: set[tuple[str, str, str]] = set()
        for prefix, plural, kind in KINDS:
            listing = self._request("GET", f"{prefix}/namespaces/{self.namespace}/{plural}") or {"items": []}
            for item in listing["items"]:
                meta = item["metadata"]
                objects.append((prefix, plural, item))
                alive.add((kind, meta["name"], meta.get("uid", "")))
        for prefix, plural, item in objects:
            meta = item["metadata"]
            refs = meta.get("ownerReferences") or []
            if refs and all((r["kind"], r["name"], r["uid"]) not in alive for r in refs):
                self._request("DELETE", f"{prefix}/namespaces/{self.namespace}/{plural}/{meta['name']}")
                self.collected.append(f"{plural}/{meta['name']}")
