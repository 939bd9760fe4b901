"""``ProviderHandle``: a framework object closes the provider it built, once closed or collected,
and never one it was given."""

from __future__ import annotations

import asyncio
import copy
import gc

import pytest

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.ownership import ProviderHandle, open_provider

NOWHERE = "http://127.0.0.1:9"  # never contacted: no call is made


def test_an_owned_provider_closes_with_its_handle() -> None:
    handle = open_provider(instances=[NOWHERE], health_checks=False)
    assert handle.owned
    handle.close()
    handle.close()  # idempotent
    assert handle.provider.closed


def test_an_owned_provider_closes_when_its_handle_is_collected() -> None:
    handle = open_provider(base_url=NOWHERE, health_checks=False)
    provider = handle.provider
    del handle
    gc.collect()
    assert provider.closed


def test_aclose_closes_an_owned_provider_once() -> None:
    handle = open_provider(instances=[NOWHERE], health_checks=False)
    asyncio.run(handle.aclose())
    assert handle.provider.closed


def test_a_borrowed_provider_stays_open() -> None:
    shared = OllamaPoolProvider(instances=[NOWHERE], health_checks=False)
    handle = open_provider(pool=shared)
    assert handle.provider is shared and not handle.owned
    handle.close()
    asyncio.run(handle.aclose())
    del handle
    gc.collect()
    assert not shared.closed
    shared.close_sync()


def test_copies_share_the_handle() -> None:
    handle = ProviderHandle(OllamaPoolProvider(instances=[NOWHERE], health_checks=False), owned=True)
    assert copy.copy(handle) is handle and copy.deepcopy(handle) is handle
    handle.close()


def test_request_timeout_splits_into_first_byte_and_idle() -> None:
    handle = open_provider(instances=[NOWHERE], health_checks=False, request_timeout=12.5)
    timeouts = handle.provider.config.timeouts
    assert (timeouts.first_byte, timeouts.idle) == (12.5, 12.5)
    with pytest.raises(ValueError, match="a shared pool= keeps its own"):
        open_provider(pool=handle.provider, request_timeout=3)
    handle.close()
