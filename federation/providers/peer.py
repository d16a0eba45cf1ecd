"""A peer Stratus site, reached over HTTP through its site agent's ``/api/v1/vms`` API.

Site API used (JSON; errors are ``{"error": {"code", "message"}}``)::

    POST   /api/v1/vms          {image, name, instance_type | vcpus + memory_mib, count: 1}
                                Idempotency-Key: <key>
                                -> 202 {id, state, ...} (or {"vms": [{id, state, ...}]})
    GET    /api/v1/vms/{id}     -> 200 {id, state, ...}; 404 if unknown
    GET    /api/v1/vms          -> 200 {"vms": [...]} (or a bare list)
    DELETE /api/v1/vms/{id}     -> 200/202/204; 404 if unknown (treated as success)

The ``httpx.AsyncClient`` is injected: the broker configures it (mutual TLS,
credentials, timeouts) and tests pass one over ``httpx.MockTransport`` or a
loopback app.  Idempotent operations — GET, DELETE, and POST *with* an
``Idempotency-Key`` — are retried with backoff on connection errors,
timeouts, 5xx and 429 (honouring ``Retry-After``); then the site counts as
failed (:class:`~federation.errors.SiteFailed`).  A 4xx answer to a create is
a refusal (:class:`~federation.errors.SiteRefused`) except 401, which means the
broker's credentials are wrong and is a failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from federation.errors import SiteFailed, SiteRefused, VMNotFound
from federation.providers.base import (
    ComputeProvider,
    ProviderVM,
    VMCreateRequest,
    VMState,
    parse_state,
)
from federation.providers.retry import NO_RETRY, RetryPolicy

#: Site agent states -> VMState (the site uses the same OpenNebula names).
SITE_STATE_MAP: dict[str, VMState] = {s.value: s for s in VMState}


class _RetryableStatus(Exception):
    """A 5xx or 429 answer, raised inside the retry loop so tenacity retries it."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.retry_after = _retry_after(response)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, _RetryableStatus | httpx.TransportError)


def _error_text(response: httpx.Response) -> str:
    """``code: message`` from a JSON error body, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code, message = err.get("code"), err.get("message")
        if code and message:
            return f"{message} ({code})"
        return str(message or code)
    text = response.text.strip().replace("\n", " ")
    return text[:200] or f"HTTP {response.status_code}"


class PeerSiteProvider(ComputeProvider):
    """A peer site as a :class:`ComputeProvider`; ``name`` is the site's name.

    ``base_url`` is the site's root (``https://site.example:8443``); with
    ``base_url=None`` paths are relative to the client's own ``base_url``.
    """

    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        *,
        base_url: str | None = None,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self._client = client
        self._prefix = (base_url.rstrip("/") if base_url else "") + "/api/v1/vms"
        self._retry = retry or RetryPolicy()
        self._headers = dict(headers or {})

    # -- HTTP -----------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str = "",
        *,
        json: Any = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """Send one request, retrying transient failures when the operation is idempotent.

        Returns any non-5xx, non-429 response; raises ``SiteFailed`` when the
        site stays unreachable or keeps answering 5xx/429.
        """
        headers = dict(self._headers)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        idempotent = method in ("GET", "HEAD", "DELETE") or idempotency_key is not None
        policy = self._retry if idempotent else NO_RETRY
        url = self._prefix + path
        try:
            async for attempt in policy.retrying(_transient):
                with attempt:
                    response = await self._client.request(method, url, json=json, headers=headers)
                    if response.status_code >= 500 or response.status_code == 429:
                        raise _RetryableStatus(response)
                    return response
        except _RetryableStatus as exc:
            what = "throttled (429)" if exc.response.status_code == 429 else "server error"
            raise SiteFailed(
                self.name,
                f"{what}: HTTP {exc.response.status_code} {_error_text(exc.response)} "
                f"after {policy.attempts} attempts",
            ) from exc
        except httpx.TimeoutException as exc:
            raise SiteFailed(self.name, f"timeout after {policy.attempts} attempts") from exc
        except httpx.TransportError as exc:
            raise SiteFailed(
                self.name,
                f"unreachable: {type(exc).__name__}: {exc} after {policy.attempts} attempts",
            ) from exc
        raise AssertionError("unreachable: the retry loop returns or raises")

    def _parse_vm(self, data: Any) -> ProviderVM:
        if isinstance(data, dict) and isinstance(data.get("vms"), list) and data["vms"]:
            data = data["vms"][0]
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise SiteFailed(self.name, "malformed answer: no VM id in the response")
        raw_state = str(data.get("state", ""))
        created: datetime | None = None
        if isinstance(data.get("created_at"), str):
            try:
                created = datetime.fromisoformat(data["created_at"].replace("Z", "+00:00"))
            except ValueError:
                created = None
        addresses = tuple(str(a) for a in data.get("addresses", ()) if a) or (
            (str(data["ip"]),) if data.get("ip") else ()
        )

        def _int(key: str) -> int | None:
            value = data.get(key)
            return value if isinstance(value, int) else None

        return ProviderVM(
            site=self.name,
            provider_id=data["id"],
            name=str(data.get("name") or data["id"]),
            state=SITE_STATE_MAP.get(raw_state, parse_state(raw_state)),
            image=data.get("image"),
            instance_type=data.get("instance_type"),
            vcpus=_int("vcpus"),
            memory_mib=_int("memory_mib"),
            addresses=addresses,
            raw_state=raw_state,
            created_at=created,
        )

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise SiteFailed(
                self.name, f"malformed answer: HTTP {response.status_code} body is not JSON"
            ) from exc

    # -- ComputeProvider ------------------------------------------------------

    async def create_vm(self, request: VMCreateRequest) -> ProviderVM:
        body: dict[str, Any] = {"image": request.image, "name": request.name, "count": 1}
        if request.instance_type is not None:
            body["instance_type"] = request.instance_type
        else:
            body["vcpus"] = request.vcpus
            body["memory_mib"] = request.memory_mib
        if request.ssh_keys:
            body["ssh_keys"] = list(request.ssh_keys)
        if request.user_data is not None:
            body["user_data"] = request.user_data
        if request.context:
            body["context"] = dict(request.context)
        response = await self._send("POST", json=body, idempotency_key=request.idempotency_key)
        status = response.status_code
        if status in (200, 201, 202):
            vm = self._parse_vm(self._json(response))
            return _with_ids(vm, request)
        if status == 401:
            raise SiteFailed(
                self.name, f"the site rejected the broker's credentials: {_error_text(response)}"
            )
        if 400 <= status < 500:
            raise SiteRefused(self.name, _error_text(response))
        raise SiteFailed(self.name, f"unexpected answer HTTP {status} to a create")

    async def get_vm(self, provider_id: str) -> ProviderVM:
        response = await self._send("GET", "/" + quote(provider_id, safe=""))
        if response.status_code == 200:
            return self._parse_vm(self._json(response))
        if response.status_code == 404:
            raise VMNotFound(self.name, f"no VM {provider_id}")
        raise SiteFailed(self.name, f"HTTP {response.status_code} {_error_text(response)}")

    async def list_vms(self) -> list[ProviderVM]:
        response = await self._send("GET")
        if response.status_code != 200:
            raise SiteFailed(self.name, f"HTTP {response.status_code} {_error_text(response)}")
        data = self._json(response)
        items = data.get("vms") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise SiteFailed(self.name, "malformed answer: no VM list in the response")
        vms = [self._parse_vm(item) for item in items]
        return [vm for vm in vms if vm.state is not VMState.DONE]

    async def kill_vm(self, provider_id: str) -> None:
        response = await self._send("DELETE", "/" + quote(provider_id, safe=""))
        if response.status_code in (200, 202, 204, 404):
            return
        raise SiteFailed(
            self.name,
            f"kill of {provider_id} answered HTTP {response.status_code} {_error_text(response)}",
        )


def _with_ids(vm: ProviderVM, request: VMCreateRequest) -> ProviderVM:
    return replace(vm, vm_id=request.vm_id, idempotency_key=request.idempotency_key)
