"""The guide's URL API: reserve a slot and get a URL, then report back by that URL.

``url = await pool.get_instance(...)`` reserves a slot like :meth:`OllamaPoolManager.acquire`;
``await pool.record_success(url, ...)`` or ``await pool.record_failure(url, exc)`` releases it.
The leases wait here, by URL, first in first out: two reservations on one instance are
released in the order they were made. ``async with pool.lease(...)`` is the safer form.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gleitzeit_llm.config import LoadBalancingStrategy
    from gleitzeit_llm.manager import Lease, OllamaPoolManager

__all__ = ["GuideApi", "url_key"]


def url_key(url: str) -> str:
    """How the guide's URLs are matched: as configured or as shown, trailing slash ignored."""
    return url.rstrip("/")


class GuideApi:
    """Mixin of :class:`~gleitzeit_llm.manager.OllamaPoolManager` with the guide's URL methods.

    Needs the manager's ``_lock``, ``_by_url``, ``route_request``, ``acquire`` and ``finish``.
    """

    _guide_leases: dict[str, deque[Lease]]

    async def get_instance(
        self: OllamaPoolManager,
        model: str | None = None,
        strategy: str | LoadBalancingStrategy | None = None,
        tags: Sequence[str] | None = None,
        require_healthy: bool = True,
        *,
        require_gpu: bool = False,
        max_latency: float | None = None,
        timeout: float | None = None,
    ) -> str:
        """Pick an instance and reserve a slot on it; returns its URL.

        Report back with :meth:`record_success` or :meth:`record_failure`, which release the slot.
        ``require_healthy=False`` also considers instances that are unhealthy or whose breaker is open.
        """
        request = self.route_request(
            model,
            strategy,
            tags,
            require_gpu=require_gpu,
            max_latency=max_latency,
            require_healthy=require_healthy,
        )
        lease = await self.acquire(request, timeout=timeout)
        with self._lock:
            self._guide_leases.setdefault(url_key(lease.url), deque()).append(lease)
        return lease.url

    async def record_success(
        self: OllamaPoolManager, url: str, response_time: float | None = None, **details: Any
    ) -> None:
        """Release the slot reserved by :meth:`get_instance` and count a success."""
        self.finish(self._pop_guide_lease(url), None, response_time=response_time, **details)

    async def record_failure(
        self: OllamaPoolManager, url: str, exception: BaseException | None = None
    ) -> None:
        """Release the slot reserved by :meth:`get_instance` and count a failure."""
        error = exception if exception is not None else RuntimeError("request failed")
        self.finish(self._pop_guide_lease(url), error)

    def _pop_guide_lease(self: OllamaPoolManager, url: str) -> Lease:
        with self._lock:
            queue = self._guide_leases.get(url_key(url))
            if queue:
                return queue.popleft()
            inst = self._by_url.get(url_key(url))
            if inst is None:
                raise KeyError(f"no instance with url {url!r} in the pool")
        raise RuntimeError(
            f"record_success/record_failure for {url!r} without a matching get_instance(): "
            "each get_instance() must be followed by exactly one record call"
        )
