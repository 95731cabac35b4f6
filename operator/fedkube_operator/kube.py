"""The one module that talks to the Kubernetes API: create, read, delete, patch status; dicts in and out.

It is a small asyncio client over the same credentials Kopf logs in with (`kopf.ConnectionInfo`),
so the operator needs no second client library at run time and no thread pool: hundreds of
jobs reconcile concurrently on one event loop. Creating what exists and deleting what is gone
are answers, not errors, which is what makes every reconcile pass safe to repeat.

At most `max_in_flight` requests are in flight at once, and a request's timeout starts when it
is sent, not while it waits its turn: hundreds of jobs starting together queue here instead of
timing out in the connection pool and retrying (which once made a busy API server busier).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from fedkube_operator import API_VERSION, PLURAL

logger = logging.getLogger(__name__)

# kind -> URL plural, for the kinds the operator manages.
PLURALS = {
    "Pod": "pods",
    "Service": "services",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Event": "events",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "PodGroup": "podgroups",
    "FederatedJob": PLURAL,
}


class ForeignObjectError(Exception):
    """An object with our name belongs to an earlier job of the same name (not yet garbage-collected)."""


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


class KubeError(Exception):
    """An API call the server refused, with its HTTP status and the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """`/api/v1/namespaces/NS/pods[/NAME]` or `/apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME]`."""
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{root}/namespaces/{namespace}/{PLURALS[kind]}"
    return f"{path}/{name}" if name else path


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: its service account; elsewhere: the kubeconfig (as the official client reads it)."""
    return (kopf.login_with_service_account(**kwargs) or kopf.login_via_client(**kwargs)
            or kopf.login_with_kubeconfig(**kwargs))


class Kube:
    """An asyncio API client; credentials arrive through `use()` whenever Kopf (re)logs in."""

    def __init__(self, timeout_seconds: float = 30.0, max_in_flight: int = 16) -> None:
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None
        self._retired: list[aiohttp.ClientSession] = []
        self._timeout = timeout_seconds
        self._max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)

    def use(self, info: kopf.ConnectionInfo) -> None:
        """Switch to new credentials; requests in flight finish on the old session."""
        self._info = info
        if self._session is not None:
            self._retired.append(self._session)
            self._session = None

    def _open(self) -> tuple[aiohttp.ClientSession, str]:
        if self._info is None:
            raise KubeError(401, "no credentials yet: the operator has not logged in")
        if self._session is None:
            headers = {"User-Agent": "fedkube-operator", **self._info.as_http_headers()}
            ssl = self._info.as_ssl_context() if self._info.server.startswith("https") else False
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_in_flight, ssl=ssl), headers=headers)
        return self._session, self._info.server.rstrip("/")

    async def close(self) -> None:
        for session in [*self._retired, *([self._session] if self._session else [])]:
            await session.close()
        self._retired, self._session = [], None

    async def _call(self, method: str, path: str, body: Any = None,
                    content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
        session, server = self._open()
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self._slots:
            try:
                async with asyncio.timeout(self._timeout), session.request(
                        method, server + path, json=body, headers=headers) as response:
                    try:
                        payload = await response.json(content_type=None)
                    except ValueError:
                        payload = {"message": await response.text()}
            except TimeoutError as exc:
                raise KubeError(504, f"{method} {path}: no answer within {self._timeout:g}s") from exc
            except aiohttp.ClientError as exc:
                raise KubeError(503, f"{method} {path}: {exc}") from exc
        if not isinstance(payload, dict):
            payload = {"message": str(payload)}
        return response.status, payload

    @staticmethod
    def _raise_for(status: int, payload: Mapping[str, Any]) -> None:
        if status >= 400:
            raise KubeError(status, str(payload.get("message") or payload.get("reason") or payload))

    async def create(self, obj: Mapping[str, Any]) -> bool:
        """Create `obj`; True if created, False if an object of that name already exists."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"])
        status, payload = await self._call("POST", path, obj)
        if status == 409:
            return False
        self._raise_for(status, payload)
        return True

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        status, payload = await self._call("GET", object_path(api_version, kind, namespace, name))
        if status == 404:
            return None
        self._raise_for(status, payload)
        return payload

    async def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete an object (only that incarnation of it when `uid` is given); False if it was gone."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        status, payload = await self._call("DELETE", object_path(api_version, kind, namespace, name), body)
        if status in (404, 409):
            return False
        self._raise_for(status, payload)
        return True

    async def patch_job_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch a FederatedJob's status subresource (None values remove keys)."""
        path = object_path(API_VERSION, "FederatedJob", namespace, name) + "/status"
        code, payload = await self._call("PATCH", path, {"status": dict(status)}, "application/merge-patch+json")
        if code == 404:
            logger.debug("FederatedJob %s/%s is gone; its status was not written", namespace, name)
            return
        self._raise_for(code, payload)
