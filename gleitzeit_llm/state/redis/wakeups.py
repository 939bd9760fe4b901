"""Cross-process wake-ups: every release publishes on the namespace's channel; one subscriber
thread per process hands each announcement to the store, which updates the handle's count and
wakes this process's own queue (its single hand-out). No polling: the thread blocks on the
socket; while Redis is down it tries again every reconnect interval."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from gleitzeit_llm.state.redis.connection import LINK_ERRORS

__all__ = ["Release", "Subscriber", "parse"]

_log = logging.getLogger("gleitzeit_llm.shared_state")

# (process token, instance id, pool-wide count, model, model count)
Release = tuple[str, str, int, str, int]


def parse(data: str) -> Release | None:
    """An announcement (``token\\tinstance\\tcount\\tmodel\\tn``; the instance id may hold tabs)."""
    token, sep, rest = data.partition("\t")
    parts = rest.rsplit("\t", 3)
    if not sep or len(parts) != 4:
        return None
    instance_id, count, model, model_count = parts
    try:
        return token, instance_id, int(count), model, int(model_count)
    except ValueError:
        return None


class Subscriber:
    """One daemon thread subscribed to ``channel``, calling ``on_release`` per announcement."""

    def __init__(
        self, client: Any, channel: str, on_release: Callable[[Release], None], retry_every: float
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_release = on_release
        self._retry_every = retry_every
        self._stop = threading.Event()
        self.subscribed = threading.Event()  # set while subscribed (tests wait on it)
        self._thread = threading.Thread(target=self._run, name="gleitzeit-shared-wakeups", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = None
            try:
                # Inside the try: a cluster client connects when it is first used, here perhaps.
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                self.subscribed.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is not None and message.get("type") == "message":
                        release = parse(message["data"])
                        if release is not None:
                            self._on_release(release)
            except LINK_ERRORS as exc:
                _log.debug("shared-state subscriber: %s", exc)
            except Exception:  # a bug in a callback must not end the wake-ups for good
                _log.exception("shared-state subscriber failed; restarting it")
            finally:
                self.subscribed.clear()
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
            self._stop.wait(self._retry_every)
