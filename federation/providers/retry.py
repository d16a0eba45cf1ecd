"""Retry with backoff for transient provider errors (tenacity), shared by the providers.

Only the provider decides what is transient (connection errors, 5xx, 429,
throttling); everything else fails at once.  A server's ``Retry-After`` (an
exception's ``retry_after`` attribute, in seconds) is honoured up to
``max_wait``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; waits ``initial_wait * 2**(n-1)`` seconds (at most ``max_wait``)
    between them."""

    attempts: int = 4
    initial_wait: float = 0.2
    max_wait: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.initial_wait < 0 or self.max_wait < 0:
            raise ValueError("waits must be >= 0")

    def wait_for(self, state: RetryCallState) -> float:
        """Seconds to wait before the next attempt."""
        wait = min(self.max_wait, self.initial_wait * 2 ** (state.attempt_number - 1))
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > wait:
            wait = min(self.max_wait, float(retry_after))
        return wait

    def retrying(self, transient: Callable[[BaseException], bool]) -> AsyncRetrying:
        """An ``AsyncRetrying`` that retries exceptions for which ``transient`` is True
        and re-raises the last one when the attempts are used up."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self.wait_for,
            retry=retry_if_exception(transient),
            reraise=True,
        )


NO_RETRY = RetryPolicy(attempts=1, initial_wait=0.0, max_wait=0.0)
