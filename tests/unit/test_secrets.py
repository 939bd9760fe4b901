"""Credentials in instance URLs and headers never show: not in status, events, logs or errors."""

from __future__ import annotations

import logging

import httpx
import pytest
import respx

from gleitzeit_llm import GleitzeitError, OllamaPoolProvider

URL = "http://alice:s3cret@127.0.0.1:21009"


@respx.mock
async def test_credentials_are_used_but_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    route = respx.post("http://127.0.0.1:21009/api/chat").mock(
        return_value=httpx.Response(500, json={"error": "boom"})
    )
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    pool = OllamaPoolProvider(
        instances=[{"id": "private", "url": URL, "headers": {"Authorization": "Bearer tok-XYZ"}}],
        load_balancing={"retry_attempts": 0},
        health_checks=False,
    )
    pool.events.subscribe(lambda event: seen.append(repr(event)))
    async with pool:
        with pytest.raises(GleitzeitError) as caught:
            await pool.chat("llama3.2", [{"role": "user", "content": "hi"}])
        status = pool.status()
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer tok-XYZ"  # the header is used...
    everything = " ".join(
        [
            str(caught.value),
            repr(caught.value),
            str(status),
            repr(pool),
            *seen,
            *(r.getMessage() for r in caplog.records),
        ]
    )
    for secret in ("s3cret", "tok-XYZ"):
        assert secret not in everything  # ...but never shown
    assert status["instances"]["private"]["url"] == "http://127.0.0.1:21009"


async def test_get_instance_hands_the_caller_the_url_it_configured() -> None:
    from gleitzeit_llm import OllamaPoolManager

    pool = OllamaPoolManager(instances=[URL], health_checks=False)
    url = await pool.get_instance()
    assert url == URL  # the guide's caller connects itself, so it needs the credentials
    await pool.record_success(url)
    assert "s3cret" not in str(pool.status())


def test_config_repr_and_errors_never_show_secrets() -> None:
    from gleitzeit_llm import ConfigError, PoolConfig

    config = PoolConfig.from_dict(
        {"instances": [{"url": URL, "headers": {"Authorization": "Bearer tok-XYZ"}}]}
    )
    assert "s3cret" not in repr(config) and "tok-XYZ" not in repr(config)
    with pytest.raises(ConfigError) as caught:
        PoolConfig.from_dict(
            {"instances": [{"url": URL, "headers": {"Authorization": "Bearer tok-XYZ"}, "weight": 0}]}
        )
    assert "s3cret" not in str(caught.value) and "tok-XYZ" not in str(caught.value)


async def test_metric_labels_never_carry_secrets() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from gleitzeit_llm import OllamaPoolManager
    from gleitzeit_llm.observability.prometheus import instrument

    pool = OllamaPoolManager(instances=[URL], health_checks=False)
    registry = CollectorRegistry()
    instrument(pool, registry)
    url = await pool.get_instance(model="llama3.2")
    await pool.record_success(url)
    text = generate_latest(registry).decode()
    assert "127.0.0.1:21009" in text  # the instance is there, by its id
    assert "s3cret" not in text and "alice" not in text
