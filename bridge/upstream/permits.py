"""How many requests may be in flight to the upstream at once, and how long a call waits.

Every open upstream response holds one permit, from the moment its request is sent until it
is closed, so at most --max-connections requests are ever in flight (aiohttp's pool has the
same size and so never queues on its own). A call that finds them all taken waits up to its
deadline, else --connect-timeout, and then fails UNAVAILABLE UPSTREAM_POOL_EXHAUSTED naming
the option: a clear status instead of an anonymous connect timeout (issue 12).
"""

from __future__ import annotations

import asyncio

from bridge.upstream import transport_failures

__all__ = ["ConnectionPermits"]


class ConnectionPermits:
    """At most `limit` upstream responses open at once (`limit` is --max-connections)."""

    def __init__(self, limit: int, *, domain: str, connect_timeout: float) -> None:
        self._limit = limit
        self._domain = domain
        self._connect_timeout = connect_timeout
        self._semaphore = asyncio.Semaphore(limit)

    async def acquire(self, remaining: float | None) -> None:
        """Take a permit, waiting at most `remaining` seconds (the caller's time left), else
        --connect-timeout. Raises UPSTREAM_POOL_EXHAUSTED when none came free in time."""
        if not self._semaphore.locked():
            await self._semaphore.acquire()  # does not suspend
            return
        wait = self._connect_timeout if remaining is None else remaining
        try:
            async with asyncio.timeout(wait):
                await self._semaphore.acquire()
        except TimeoutError:
            raise transport_failures.transport_error(
                "pool_exhausted",
                domain=self._domain,
                detail=f"all {self._limit} connections were in use for {wait:g} s",
            ) from None

    def release(self) -> None:
        """Give back a permit: the request got no response, or its response is closed."""
        self._semaphore.release()
