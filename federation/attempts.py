"""Failover: try the ranked candidates in order until one site takes the VM.

Every attempt is reported through ``record(site, message)`` — the broker
writes these lines into the VM's event log — with one of the messages::

    trying site lal (rank 1 score 3.812 (...))
    site lal refused: no free public address
    site lal failed: timeout after 30s
    placed on site cnrs

A :class:`~federation.errors.SiteRefused` (the site answered no) and a
:class:`~federation.errors.SiteFailed` (the site is broken or unreachable,
after the provider's own retries) both move on to the next candidate; any other
exception is a bug in ``try_site`` and propagates at once (after being
recorded), rather than being masked as "every site failed".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from federation.errors import AllAttemptsFailed, Attempt, SiteFailed, SiteRefused
from federation.model import Candidate, PlacementDecision
from federation.placement import placement_error

T = TypeVar("T")

Recorder = Callable[[str, str], None]


async def place_with_failover(
    decision: PlacementDecision,
    try_site: Callable[[Candidate], Awaitable[T]],
    record: Recorder,
    *,
    attempt_timeout: float | None = None,
) -> T:
    """Try ``decision.candidates`` best first; return what ``try_site`` returns for the first
    site that accepts.

    ``try_site(candidate)`` creates the VM at the candidate's site and raises
    ``SiteRefused`` or ``SiteFailed`` when it cannot.  ``attempt_timeout``
    (seconds) bounds each attempt; an attempt running longer is cancelled and
    counts as failed ("timeout").  Raises :class:`PlacementError` when the
    decision has no candidate, and :class:`AllAttemptsFailed` (with every
    attempt and its reason) when all candidates refused or failed.
    """
    if not decision.candidates:
        raise placement_error(decision)
    attempts: list[Attempt] = []
    for candidate in decision.candidates:
        site = candidate.site
        record(site, f"trying site {site} ({candidate.explain()})")
        try:
            if attempt_timeout is None:
                result = await try_site(candidate)
            else:
                async with asyncio.timeout(attempt_timeout):
                    result = await try_site(candidate)
        except SiteRefused as exc:
            reason = exc.reason
            record(site, f"site {site} refused: {reason}")
            attempts.append(Attempt(site, "refused", reason))
        except SiteFailed as exc:
            reason = exc.reason
            record(site, f"site {site} failed: {reason}")
            attempts.append(Attempt(site, "failed", reason))
        except TimeoutError:
            reason = "timeout" if attempt_timeout is None else f"timeout after {attempt_timeout:g}s"
            record(site, f"site {site} failed: {reason}")
            attempts.append(Attempt(site, "failed", reason))
        except Exception as exc:
            record(site, f"site {site} error: {type(exc).__name__}: {exc}")
            raise
        else:
            record(site, f"placed on site {site}")
            return result
    summary = "; ".join(f"{a.site} {a.outcome}: {a.reason}" for a in attempts)
    raise AllAttemptsFailed(
        f"all {len(attempts)} candidate sites refused or failed: {summary}", attempts=attempts
    )
