"""Release announcements go out only while another process waits: a process registers as
waiting (its acquire script refused "full", or one round trip before its first caller queues)
and every release after that is announced; with nobody waiting, releases are silent (each
announcement wakes a thread in every process)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gleitzeit_llm import OllamaPoolManager
from gleitzeit_llm.manager import Lease

from .checks import release_wakes_waiter
from .store_support import MODEL

_SENTINEL = "sentinel"


@pytest.fixture
def announcements(redis_server: Any) -> Iterator[Callable[[OllamaPoolManager], Callable[[], list[str]]]]:
    """``listen(manager)`` subscribes to the manager's channel; calling what it returns publishes
    a sentinel and gives every announcement received before it (the server keeps their order)."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True, retry=Retry(NoBackoff(), 0))
    subscriptions: list[Any] = []

    def listen(manager: OllamaPoolManager) -> Callable[[], list[str]]:
        assert manager._shared is not None
        channel = manager._shared.keys.channel
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel)
        subscriptions.append(pubsub)

        def received() -> list[str]:
            client.publish(channel, _SENTINEL)
            got: list[str] = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                # None also stands for a subscribe confirmation, which is ignored.
                message = pubsub.get_message(timeout=1.0)
                if message is None or message["type"] != "message":
                    continue
                if message["data"] == _SENTINEL:
                    return got
                got.append(message["data"])
            raise AssertionError("the sentinel never arrived")

        return received

    yield listen
    for pubsub in subscriptions:
        pubsub.close()
    client.close()


def test_releases_are_not_announced_while_nobody_waits(pools: Any, announcements: Any) -> None:
    first, _second = pools(), pools()
    received = announcements(first)
    request = first.route_request(MODEL)
    for _ in range(5):
        lease = first.try_acquire(request)
        assert isinstance(lease, Lease)
        first.finish(lease, None)

    assert received() == []


def test_a_waiter_in_the_same_process_is_woken_without_an_announcement(
    pools: Any, announcements: Any
) -> None:
    manager = pools(refresh_interval=60)
    received = announcements(manager)

    release_wakes_waiter(manager, manager)

    assert received() == []  # registered as waiting, but its own releases wake its own queue


def test_a_release_is_announced_once_another_process_waits(pools: Any, announcements: Any) -> None:
    holder, waiter = pools(), pools(refresh_interval=60)  # only the announcement can wake it
    received = announcements(holder)

    release_wakes_waiter(holder, waiter)

    # (instance, count, model, model count): the release that woke the waiter; not the
    # waiter's own release (nobody else waits: it would read 1, 1 again); the holder's last one
    # unless the waiter's registration lapsed first (a second after it queued).
    first, *rest = [line.split("\t")[1:] for line in received()]
    assert first == ["a", "1", "llama3.2:latest", "1"]
    assert rest in ([], [["a", "0", "llama3.2:latest", "0"]])


def test_a_slot_freed_before_the_waiter_registered_is_found_before_it_waits(pools: Any) -> None:
    """The waiter's snapshot says full, and the release that freed a slot was not announced
    (nobody waited yet): registering reads the counts afresh, so it takes the slot at once
    instead of waiting for a refresh (a minute here) or its queue timeout."""
    holder, waiter = pools(), pools(refresh_interval=60)
    request = holder.route_request(MODEL)
    held = [holder.try_acquire(request) for _ in range(2)]
    waiter._shared.refresh()  # its view: both slots taken
    holder.finish(held[0], None)  # unannounced

    got = waiter.acquire_sync(request, timeout=5)

    assert isinstance(got, Lease)
    assert waiter.status()["waiting_requests"] == 0
    waiter.finish(got, None)
    holder.finish(held[1], None)
