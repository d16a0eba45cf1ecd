"""One HTTP exchange with a site agent: signing, retries, and the one mapping of its errors.

:class:`SiteHttp` is the transport half of :class:`~federation.providers.site_api.SiteApi`
(which holds the endpoints). For every request it:

* builds the URL itself (``<base_url>/api/v1<path>?<query>``) and serialises
  the JSON body itself, so the bytes signed are the bytes sent;
* authenticates: as the broker's own account at the site
  (``Authorization: Bearer <token>``), or, acting for a user, with a
  delegation assertion (``Authorization: Stratus-Delegation <JWT>``) signed
  by :meth:`RequestSigner.authorization` over the method, the path and query
  exactly as sent, and the body bytes: a fresh one for every attempt (each
  assertion has its own ``jti`` and the site refuses replays);
* retries idempotent requests (GET, DELETE, and POST/PATCH *with* an
  ``Idempotency-Key``) on connection errors, timeouts, 5xx and 429 with
  backoff, honouring ``Retry-After``; other requests are sent once;
* maps every outcome once: 2xx -> the JSON body; 404 ->
  :class:`~federation.errors.ProviderNotFound`; 401 ->
  :class:`~federation.errors.SiteFailed` (the site does not accept the
  broker's credentials: a configuration problem, not an answer about the
  request); other 4xx -> :class:`~federation.errors.SiteRefused` with the
  site's status, code and message; 5xx/429/unreachable after the retries,
  an unexpected status or a body that is not JSON -> ``SiteFailed``.

Nothing outside this module sees an ``httpx`` exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from auth.delegation import DelegatedUser
from federation.errors import ProviderNotFound, SiteFailed, SiteRefused
from federation.providers.retry import NO_RETRY, RetryPolicy

#: Seconds added to a ``?wait=`` request's own timeout for the HTTP read timeout.
WAIT_MARGIN = 10.0


class RequestSigner(Protocol):
    """What signs a request made for a user: ``auth.delegation.DelegationSigner``."""

    def authorization(
        self, user: DelegatedUser, *, audience: str, method: str, target: str, body: bytes
    ) -> str:
        """The whole ``Authorization`` header value for this one request."""
        ...


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


def error_fields(response: httpx.Response) -> tuple[str, str]:
    """``(code, message)`` of a site's JSON error body; for other bodies, their start."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or "error")
        message = str(err.get("message") or code)
        return code, message
    text = response.text.strip().replace("\n", " ")[:200]
    return "error", text or f"HTTP {response.status_code}"


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def encode_query(params: Mapping[str, object] | None) -> dict[str, str]:
    """Query parameters as strings (booleans as ``true``/``false``); None values dropped."""
    return {k: _query_value(v) for k, v in (params or {}).items() if v is not None}


def encode_json(data: Any) -> bytes:
    """The exact bytes of a JSON body (compact; what is signed is what is sent)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class SiteHttp:
    """Sends requests to one site's ``/api/v1`` (see the module docstring).

    ``name`` is the site's name: the assertion's audience and the ``site`` of
    every error. ``client`` is shared (its keep-alive pool serves every site
    and every user); it is never closed here.
    """

    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        token: str | None,
        signer: RequestSigner | None,
        retry: RetryPolicy,
        user: DelegatedUser | None = None,
    ) -> None:
        if user is not None and signer is None:
            raise ValueError(f"site {name}: acting for a user needs a delegation signer")
        self.name = name
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.signer = signer
        self.retry = retry
        self.user = user

    def for_user(self, user: DelegatedUser | None) -> SiteHttp:
        """The same transport (same pool, token and signer) acting for ``user``."""
        return SiteHttp(
            self.name,
            self.client,
            base_url=self.base_url,
            token=self.token,
            signer=self.signer,
            retry=self.retry,
            user=user,
        )

    def url(self, path: str, params: Mapping[str, object] | None = None) -> httpx.URL:
        """The full URL of ``path`` (under ``/api/v1``) with its encoded query."""
        return httpx.URL(self.base_url + "/api/v1" + path, params=encode_query(params))

    def _headers(self, method: str, url: httpx.URL, body: bytes) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        if self.user is not None:
            assert self.signer is not None  # checked in __init__
            # The target is the path and query as they go on the wire.
            target = url.raw_path.decode("ascii")
            headers["Authorization"] = self.signer.authorization(
                self.user, audience=self.name, method=method, target=target, body=body
            )
        elif self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, object] | None = None,
        json_body: Any = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request (retried if idempotent); the JSON body of the 2xx answer.

        An empty 2xx body is None. Raises ``ProviderNotFound``, ``SiteRefused``
        or ``SiteFailed`` as the module docstring says.
        """
        url = self.url(path, params)
        body = b"" if json_body is None else encode_json(json_body)
        idempotent = method in ("GET", "HEAD", "DELETE") or idempotency_key is not None
        policy = self.retry if idempotent else NO_RETRY
        what = f"{method} {url.raw_path.decode('ascii')}"
        extra: dict[str, str] = {}
        if idempotency_key is not None:
            extra["Idempotency-Key"] = idempotency_key
        http_timeout: Any = httpx.USE_CLIENT_DEFAULT if timeout is None else timeout
        try:
            async for attempt in policy.retrying(_transient):
                with attempt:
                    headers = {**self._headers(method, url, body), **extra}
                    response = await self.client.request(
                        method, url, content=body, headers=headers, timeout=http_timeout
                    )
                    if response.status_code >= 500 or response.status_code == 429:
                        raise _RetryableStatus(response)
        except _RetryableStatus as exc:
            status = exc.response.status_code
            kind = "throttled (429)" if status == 429 else "server error"
            _, message = error_fields(exc.response)
            raise SiteFailed(
                self.name,
                f"{what}: {kind}: HTTP {status} {message} after {policy.attempts} attempts",
            ) from exc
        except httpx.TimeoutException as exc:
            raise SiteFailed(
                self.name, f"{what}: timeout after {policy.attempts} attempts"
            ) from exc
        except httpx.TransportError as exc:
            raise SiteFailed(
                self.name,
                f"{what}: unreachable: {type(exc).__name__}: {exc} "
                f"after {policy.attempts} attempts",
            ) from exc
        return self._answer(what, response)

    def _answer(self, what: str, response: httpx.Response) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError as exc:
                raise SiteFailed(
                    self.name, f"{what}: malformed answer: HTTP {status} body is not JSON"
                ) from exc
        code, message = error_fields(response)
        if status == 404:
            raise ProviderNotFound(self.name, message)
        if status == 401:
            raise SiteFailed(
                self.name, f"the site rejected the broker's credentials: {message} ({code})"
            )
        if 400 <= status < 500:
            raise SiteRefused(self.name, f"{message} ({code})", status=status, code=code)
        raise SiteFailed(self.name, f"{what}: unexpected answer HTTP {status}: {message}")
