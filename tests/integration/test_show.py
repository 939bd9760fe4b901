"""``OllamaPoolProvider.show()``/``show_sync()``: ``/api/show`` through the pool. It reaches an
instance the way calls do (credentials, TLS), fails over, keeps an answer per model and forgets
a failure. Against emulators on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import pytest

from gleitzeit_llm import (
    AllInstancesFailedError,
    NoInstanceAvailableError,
    OllamaPoolProvider,
    RequestError,
    SyncCallInEventLoopError,
)
from gleitzeit_llm.testing import OllamaEmulator

Emulators = Callable[..., list[OllamaEmulator]]


def quiet(emulators: list[OllamaEmulator], **extra: Any) -> OllamaPoolProvider:
    """A pool over ``emulators`` in order, without health checks (only show() talks to them)."""
    instances = [{"id": f"e{i}", "url": e.url, "priority": i, **extra} for i, e in enumerate(emulators)]
    return OllamaPoolProvider(instances=instances, health_checks=False)


def shows(emulators: list[OllamaEmulator]) -> list[int]:
    return [len(e.requests_for("/api/show")) for e in emulators]


def test_show_sync_answers_once_per_model(ollama_emulators: Emulators) -> None:
    emulators = ollama_emulators(2)
    with quiet(emulators) as pool:
        assert pool.show_cached("llama3.2") is None
        shown = pool.show_sync("llama3.2")
        assert shown.context_length == 131072 and "completion" in (shown.capabilities or [])
        assert pool.show_sync("llama3.2:latest") is shown  # one model key, one answer
        assert pool.show_cached("llama3.2") is shown
        assert pool.show_sync("qwen3").context_length == 40960
        assert sum(shows(emulators)) == 2


def test_show_fails_over_to_an_instance_that_answers(ollama_emulators: Emulators) -> None:
    emulators = ollama_emulators(2)
    emulators[0].stop()
    with quiet(emulators) as pool:
        assert asyncio.run(pool.show("llama3.2")).context_length == 131072
    assert shows(emulators) == [0, 1]


def test_show_skips_an_instance_without_the_model(ollama_emulators: Emulators) -> None:
    without, with_it = ollama_emulators(1, models=["qwen3"]) + ollama_emulators(1)
    with quiet([without, with_it]) as pool:
        assert pool.show_sync("llama3.2").context_length == 131072  # 404 on e0, then e1


def test_a_failed_show_is_not_kept(ollama_emulators: Emulators) -> None:
    (emulator,) = ollama_emulators(1)
    emulator.stop()
    with quiet([emulator]) as pool:
        with pytest.raises(AllInstancesFailedError, match=r"/api/show 'llama3.2'") as info:
            pool.show_sync("llama3.2")
        assert info.value.instances == ["e0"]
        emulator.start()
        assert pool.show_sync("llama3.2").context_length == 131072


def test_show_needs_an_instance_that_may_have_the_model(ollama_emulators: Emulators) -> None:
    (emulator,) = ollama_emulators(1)
    instance = {"id": "e0", "url": emulator.url, "models": ["qwen3"]}
    with OllamaPoolProvider(instances=[instance], health_checks=False) as pool:
        with pytest.raises(NoInstanceAvailableError):
            pool.show_sync("llama3.2")
        with pytest.raises(RequestError):
            pool.show_sync(":bad")
    assert shows([emulator]) == [0]


def test_show_sync_on_an_event_loop_thread_is_refused_unless_kept(ollama_emulators: Emulators) -> None:
    emulators = ollama_emulators(1)

    async def on_a_loop(pool: OllamaPoolProvider) -> None:
        with pytest.raises(SyncCallInEventLoopError, match=r"await provider.show"):
            pool.show_sync("llama3.2")
        await pool.show("llama3.2")
        assert pool.show_sync("llama3.2").context_length == 131072  # kept: no I/O, no refusal

    with quiet(emulators) as pool:
        asyncio.run(on_a_loop(pool))


def test_show_reaches_an_instance_behind_credentials(ollama_emulators: Emulators) -> None:
    (emulator,) = ollama_emulators(1, basic_auth=("alice", "s3cret"))
    url = emulator.url.replace("http://", "http://alice:s3cret@")
    with OllamaPoolProvider(instances=[url], health_checks=False) as pool:
        assert pool.show_sync("llama3.2").context_length == 131072
    without = OllamaPoolProvider(instances=[emulator.url], health_checks=False)
    with without as pool, pytest.raises(AllInstancesFailedError, match="401"):
        pool.show_sync("llama3.2")


def test_show_reaches_an_instance_with_a_private_ca(
    ollama_emulators: Emulators, pki: dict[str, str], server_tls: Callable[..., ssl.SSLContext]
) -> None:
    (emulator,) = ollama_emulators(1, ssl_context=server_tls(require_client_cert=True))
    instance = {
        "url": emulator.url,
        "verify": pki["ca.pem"],
        "client_cert": pki["client.pem"],
        "client_key": pki["client.key"],
    }
    with OllamaPoolProvider(instances=[instance], health_checks=False) as pool:
        assert asyncio.run(pool.show("llama3.2")).context_length == 131072
