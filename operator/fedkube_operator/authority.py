"""The job's mTLS Secrets on the API server: one CA, and every identity signed by it.

Creating a job's Secrets takes one API call each and can be cut off anywhere (an operator
crash, a lost connection). So the CA comes first, in a Secret of its own that no pod mounts,
and every later pass signs with the CA that Secret holds rather than a fresh one; an identity
Secret that exists is kept only if that CA signed it, and replaced otherwise. Whatever was
interrupted, the finished set trusts one CA, and one deleted identity Secret is re-issued under
the CA the running pods already trust.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any

from fedkube.plan import JobPlan
from fedkube.secure.tls import CA_FILE, CERT_FILE, KEY_FILE, Authority, Identity
from fedkube_operator.kube import ForeignObjectError, Kube, KubeError, owned_by
from fedkube_operator.names import CA_IDENTITY, tls_secret_name
from fedkube_operator.render import Owner, render_ca_secret

log = logging.getLogger(__name__)


def _data(secret: Mapping[str, Any], key: str) -> bytes:
    return base64.b64decode((secret.get("data") or {}).get(key, ""))


async def job_authority(kube: Kube, plan: JobPlan, owner: Owner) -> Authority | None:
    """The job's CA: created now, or read back from the Secret an earlier pass created; None without mTLS."""
    if not plan.tls:
        return None
    fresh = Authority.new(plan.name)
    if await kube.create(render_ca_secret(plan, owner, fresh)):
        return fresh
    name = tls_secret_name(plan.name, CA_IDENTITY)
    existing = await kube.get("v1", "Secret", owner.namespace, name)
    if existing is None:
        raise KubeError(409, f"Secret {name} existed and then vanished; the next pass creates it")
    if not owned_by(existing, owner.uid):
        raise ForeignObjectError(f"Secret {name} belongs to an earlier FederatedJob named {owner.name}; "
                                 "waiting for it to be garbage-collected")
    return Authority(_data(existing, CERT_FILE), _data(existing, KEY_FILE))


def _identity(secret: Mapping[str, Any]) -> Identity:
    return Identity(_data(secret, CA_FILE), _data(secret, CERT_FILE), _data(secret, KEY_FILE))


async def create_signed(kube: Kube, secret: Mapping[str, Any], authority: Authority) -> None:
    """Create one identity Secret (signed by `authority`); one of that name signed by another CA is replaced."""
    if await kube.create(secret):
        return
    meta = secret["metadata"]
    existing = await kube.get("v1", "Secret", meta["namespace"], meta["name"])
    if existing is not None and authority.issued(_identity(existing)):
        return
    if existing is not None:
        log.warning("Secret %s/%s does not chain to the job's CA (an interrupted creation left it): replacing it",
                    meta["namespace"], meta["name"])
        await kube.delete("v1", "Secret", meta["namespace"], meta["name"], uid=existing["metadata"].get("uid"))
    if not await kube.create(secret):
        raise KubeError(409, f"Secret {meta['namespace']}/{meta['name']} was recreated by someone else meanwhile; "
                             "the next pass checks it again")
