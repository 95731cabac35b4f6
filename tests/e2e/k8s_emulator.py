"""TEST-ONLY: a Kubernetes API server stand-in, kmock's KubernetesEmulator plus what kubectl,
Kopf and these tests need from a real API server.

kmock 0.8 stores objects, lists, watches, creates, merge-patches and deletes (honouring
finalizers). This subclass adds, in the API server's place:

- server-side metadata on create (namespace, uid, creationTimestamp, resourceVersion,
  generation) and a new resourceVersion on every write;
- CRD registration for discovery when a CustomResourceDefinition is created;
- `kind`/`apiVersion` on list responses, "v1" (not "/v1") as the core groupVersion, no short
  names on subresources, and `/api/v1/namespaces[/NAME]` paths;
- server-side printing (`kubectl get` asks for a meta.k8s.io Table): a CRD's
  additionalPrinterColumns for its objects, the usual columns for pods and events, NAME/AGE
  for everything else;
- 404 for resources of groups it does not serve (builtins and registered CRDs are served);
- validating admission: CREATE and UPDATE requests are sent as AdmissionReviews to the webhooks
  of stored ValidatingWebhookConfigurations whose rules match, and refused when they deny.

Served requests leave kmock's request log (kmock scans it on every request) and objects are found
by key rather than by scanning, so thousands of objects stay fast; tests count creations through
`created` instead of the log.

What it still does NOT do (tests must not rely on it): garbage collection, scheduling, kubelets,
defaulting, schema validation, RBAC, label/field selectors, resourceVersion conflicts,
generation bumps on spec changes, strategic-merge patches.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import itertools
import json
import logging
import ssl
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import aiohttp
import aiohttp.web
import kmock
from kmock._internal import parsing
from kmock._internal.dicts import merge_patch_dict
from kmock._internal.k8s import KubernetesError

# The server thread outlives each test's captured output: an access line logged after a test
# ends would be written to a closed stream. Requests are counted in `created`, not logged.
logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

_original_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    # kmock 0.8 cannot parse '/api/v1/namespaces' (500) and reads '/api/v1/namespaces/NAME' as a
    # namespace with no resource; Kopf lists namespaces when serving named ones.
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
            len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))):
        return parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) > 3 else None,
                                  parts[4] if len(parts) > 4 else None)
    return _original_parse_path(path)


parsing.parse_path = _parse_path

CRD = ("apiextensions.k8s.io", "customresourcedefinitions")
WEBHOOKS = ("admissionregistration.k8s.io", "validatingwebhookconfigurations")
_resource_versions = itertools.count(1)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.fromisoformat(timestamp)
    if then.tzinfo is None:
        then = then.replace(tzinfo=datetime.UTC)
    seconds = max(0, int((datetime.datetime.now(datetime.UTC) - then).total_seconds()))
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"


def _json_path(obj: Any, path: str) -> Any:
    """The value at a simple `.a.b.c` JSONPath, or None."""
    for part in path.strip(".").split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


class AdmissionDenied(KubernetesError):
    pass


class FedkubeEmulator(kmock.KubernetesEmulator):
    """The emulator with the API-server behaviour listed in the module docstring."""

    created: list[tuple[str, str]]  # (plural, name) of every object created, in order
    webhook_configs: set[Any]  # object keys of the ValidatingWebhookConfigurations ever created
    # Opt in by setting a list: every request, as it arrives (watches included), for tests that
    # check who asked for what (the chart's RBAC). Off by default, so benchmarks keep no log.
    access_log: list[Any] | None = None

    def register_crd(self, crd: Mapping[str, Any]) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for version in spec.get("versions", []):
            info = self.resources[f"{spec['group']}/{version['name']}/{names['plural']}"]
            info.kind = names.get("kind")
            info.singular = names.get("singular") or names.get("kind", "").lower()
            info.namespaced = spec.get("scope", "Namespaced") == "Namespaced"
            info.shortnames = set(names.get("shortNames", []))
            info.categories = set(names.get("categories", []))
            info.verbs = {"create", "delete", "get", "list", "patch", "update", "watch"}
            info.subresources = set(version.get("subresources", {}).keys())

    def _printer_columns(self, resource: Any) -> list[dict[str, Any]]:
        for (res, _ns, _name), obj in list(self.objects.items()):
            if (res.group, res.plural) != CRD or obj.deleted:
                continue
            spec = obj.get("spec", {})
            if spec.get("group") == resource.group and spec.get("names", {}).get("plural") == resource.plural:
                for version in spec.get("versions", []):
                    if version.get("name") == resource.version:
                        return list(version.get("additionalPrinterColumns", []))
        return []

    def _columns(self, resource: Any) -> list[tuple[str, str, Any]]:
        """(name, type, value-of-object) columns as the API server prints them for `kubectl get`."""
        if (resource.group, resource.plural) == ("", "events"):
            return [("Last Seen", "string", lambda o: _age(o.get("lastTimestamp"))),
                    ("Type", "string", lambda o: o.get("type")),
                    ("Reason", "string", lambda o: o.get("reason")),
                    ("Object", "string", lambda o: "{}/{}".format(
                        o.get("involvedObject", {}).get("kind", "").lower(), o.get("involvedObject", {}).get("name"))),
                    ("Message", "string", lambda o: o.get("message"))]
        columns: list[tuple[str, str, Any]] = [("Name", "string", lambda o: o.get("metadata", {}).get("name"))]
        if (resource.group, resource.plural) == ("", "pods"):
            columns += [("Ready", "string", lambda o: "{}/{}".format(
                            sum(1 for c in o.get("status", {}).get("containerStatuses", []) if c.get("ready")),
                            len(o.get("spec", {}).get("containers", [])))),
                        ("Status", "string", lambda o: o.get("status", {}).get("phase", "Pending")),
                        ("Restarts", "integer", lambda o: 0)]
        for column in self._printer_columns(resource):
            if column.get("type") != "date":
                path = column["jsonPath"]
                columns.append((column["name"], column.get("type", "string"),
                                lambda o, path=path: _json_path(o, path)))
        columns.append(("Age", "string", lambda o: _age(o.get("metadata", {}).get("creationTimestamp"))))
        return columns

    def _table(self, resource: Any, items: list[Mapping[str, Any]]) -> dict[str, Any]:
        columns = self._columns(resource)
        definitions = [{"name": name, "type": type_, **({"format": "name"} if name == "Name" else {})}
                       for name, type_, _ in columns]
        rows = [{"cells": [value(item) for _, _, value in columns],
                 "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                            "metadata": item.get("metadata", {})}} for item in items]
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "1"},
                "columnDefinitions": definitions, "rows": rows}

    @staticmethod
    def _wants_table(request: Any) -> bool:
        return "as=Table" in request.headers.get("Accept", "")

    async def _serve_list(self, request: Any) -> Any:
        payload = await super()._serve_list(request)
        if self._wants_table(request):
            return self._table(request.resource, payload["items"])
        res = request.resource
        info = self.resources[res] if res in self.resources else None
        kind = info.kind if info and info.kind else res.plural.capitalize()
        payload["kind"] = f"{kind}List"
        payload["apiVersion"] = f"{res.group}/{res.version}" if res.group else res.version
        payload["metadata"] = {"resourceVersion": str(next(_resource_versions))}
        return payload

    async def _serve_fetch(self, request: Any) -> Any:
        payload = await super()._serve_fetch(request)
        if self._wants_table(request) and request.subresource is None:
            return self._table(request.resource, [payload])
        return payload

    async def _serve_version(self, request: Any) -> Any:
        payload = await super()._serve_version(request)
        if payload["groupVersion"].startswith("/"):
            payload["groupVersion"] = payload["groupVersion"][1:]
        for entry in payload["resources"]:
            if "/" in entry["name"]:
                entry["shortNames"] = []
                entry["categories"] = []
        return payload

    def _stored(self, request: Any) -> Mapping[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    async def _admit(self, request: Any, obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> None:
        """Send the request to every matching validating webhook; raise if one denies it."""
        res = request.resource
        operation = "CREATE" if request.action == kmock.action.CREATE else "UPDATE"
        configs = [self.objects[k].raw for k in list(self.webhook_configs)
                   if k in self.objects and not self.objects[k].deleted]
        for config in configs:
            for webhook in config.get("webhooks") or []:
                if not any(res.group in rule.get("apiGroups", []) and res.version in rule.get("apiVersions", [])
                           and res.plural in rule.get("resources", [])
                           and ({"*", operation} & set(rule.get("operations", [])))
                           for rule in webhook.get("rules") or []):
                    continue
                review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
                    "uid": str(uuid.uuid4()), "operation": operation,
                    "kind": {"group": res.group, "version": res.version, "kind": obj.get("kind")},
                    "resource": {"group": res.group, "version": res.version, "resource": res.plural},
                    "name": obj.get("metadata", {}).get("name"), "namespace": request.namespace,
                    "userInfo": {"username": "kubectl-user"}, "object": obj, "oldObject": old,
                    "dryRun": False}}
                response = await self._call_webhook(webhook, review)
                if not response.get("allowed", False):
                    message = (response.get("status") or {}).get("message", "denied")
                    raise AdmissionDenied(
                        status=(response.get("status") or {}).get("code") or 403, reason="Invalid",
                        message=f'admission webhook "{webhook["name"]}" denied the request: {message}',
                        details={})

    @staticmethod
    async def _call_webhook(webhook: Mapping[str, Any], review: Mapping[str, Any]) -> Mapping[str, Any]:
        client = webhook.get("clientConfig", {})
        context: ssl.SSLContext | bool = False
        if client.get("caBundle"):
            context = ssl.create_default_context(cadata=base64.b64decode(client["caBundle"]).decode())
        async with aiohttp.ClientSession() as session, session.post(
                client["url"], json=review, ssl=context, timeout=aiohttp.ClientTimeout(total=10)) as response:
            if response.status != 200:
                raise KubernetesError(status=500, reason="InternalError", details={},
                                      message=f'failed calling webhook "{webhook["name"]}": HTTP {response.status}')
            return (await response.json()).get("response", {})

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if self.access_log is not None:
            self.access_log.append(request)
        res = request.resource
        if res is not None and res.group and res.plural and res not in self.resources:
            # As an API server answers for a group/version it does not serve (no CRD installed).
            raise KubernetesError(status=404, reason="NotFound", details={},
                                  message="the server could not find the requested resource")
        if res is not None and isinstance(request.data, dict):
            if request.action == kmock.action.CREATE:
                info = self.resources[res] if res in self.resources else None
                if info is not None and info.kind:
                    request.data.setdefault("kind", info.kind)
                    request.data.setdefault("apiVersion", f"{res.group}/{res.version}" if res.group else res.version)
                meta = request.data.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                if request.namespace:
                    meta.setdefault("namespace", request.namespace)
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                meta.setdefault("generation", 1)
                meta["resourceVersion"] = str(next(_resource_versions))
                await self._admit(request, request.data, None)
                if (res.group, res.plural) == CRD:
                    self.register_crd(request.data)
            elif request.action == kmock.action.UPDATE:
                old = self._stored(request)
                if request.subresource is None and old is not None:
                    await self._admit(request, dict(merge_patch_dict(old, request.data)), old)
                request.data.setdefault("metadata", {})["resourceVersion"] = str(next(_resource_versions))
        try:
            response = await super()._handle(request)
        finally:
            self._forget(request)
        if res is not None and request.action == kmock.action.CREATE and response.status < 300:
            name = (request.data.get("metadata") or {}).get("name", "")
            self.created.append((res.plural, name))
            if (res.group, res.plural) == WEBHOOKS:
                self.webhook_configs.add((res, request.namespace, name))
        return response

    def _KubernetesEmulator__get_objs(self, request: Any, strict: bool) -> list[Any]:  # noqa: N802
        """kmock scans every object to find one by name; look it up by its key instead."""
        if request.name is not None and (strict or request.namespace is not None):
            key = (request.resource, request.namespace, request.name)
            return [self._objects[key]] if key in self._objects else []
        return super()._KubernetesEmulator__get_objs(request, strict)  # type: ignore[misc]

    def _forget(self, request: Any) -> None:
        """Drop a served request from kmock's request log, which every later request scans (quadratic)."""
        for index in range(len(self._requests) - 1, -1, -1):
            if self._requests[index] is request:
                del self._requests[index]
                return


class EmulatorServer:
    """The emulator served on a free 127.0.0.1 port from its own thread and event loop."""

    def __init__(self) -> None:
        self.emulator: FedkubeEmulator | None = None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    async def _serve(self, ready: threading.Event) -> None:
        emulator = FedkubeEmulator()
        emulator.created, emulator.webhook_configs = [], set()
        emulator.resources.load_bundled()
        for resource in list(emulator.resources):
            # The bundle is a k3s snapshot: metrics.k8s.io 'pods' would shadow the real pods in kubectl.
            if resource.group in ("metrics.k8s.io", "gateway.networking.k8s.io"):
                del emulator.resources[resource]
        async with emulator, kmock.Server(emulator, host="127.0.0.1") as server:
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready.set()
            await self._stop.wait()

    def start(self) -> EmulatorServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(ready),), daemon=True,
                                        name="k8s-emulator")
        self._thread.start()
        if not ready.wait(20):
            raise RuntimeError("the Kubernetes emulator did not start within 20s")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def kubeconfig(self, namespace: str = "default") -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester",
                                                          "namespace": namespace}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
        })

    def creations(self, plural: str) -> list[str]:
        """The name of every object of `plural` created so far, once per successful create (duplicates show)."""
        assert self.emulator is not None
        return [name for kind, name in list(self.emulator.created) if kind == plural]


@contextmanager
def running_emulator() -> Iterator[EmulatorServer]:
    server = EmulatorServer().start()
    try:
        yield server
    finally:
        server.stop()
