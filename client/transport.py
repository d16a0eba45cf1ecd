"""How the SDK talks HTTP: client TLS, and a service's JSON error body as an exception."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from client.errors import ApiError, ClientConfigError


def tls_context(cert: str | None, ca: str | None) -> ssl.SSLContext:
    """Client TLS: trust ``ca`` (a CA file, or an IGTF-style hashed directory) or the system
    store; present ``cert`` (a PEM with certificate, key and chain: a grid proxy works)."""
    context = ssl.create_default_context()
    if ca is not None:
        try:
            if Path(ca).is_dir():
                context.load_verify_locations(capath=ca)
            else:
                context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise ClientConfigError(f"cannot load CA certificates from {ca}: {exc}") from exc
    if cert is not None:
        try:
            context.load_cert_chain(cert)
        except (OSError, ssl.SSLError) as exc:
            raise ClientConfigError(f"cannot load certificate {cert}: {exc}") from exc
    return context


def api_error(response: httpx.Response) -> ApiError:
    try:
        error = response.json()["error"]
        return ApiError(
            response.status_code,
            str(error.get("code", "error")),
            str(error.get("message", "")),
            error.get("details"),
        )
    except (ValueError, KeyError, TypeError):
        text = (
            response.text.strip().splitlines()[0]
            if response.text.strip()
            else response.reason_phrase
        )
        return ApiError(response.status_code, "http_error", text[:200])
