"""One hint parser: every entry point (provider params, the manager's route_request, the workflow
pre-check and the LangChain adapter) rejects the same bad hint with the same RequestError, and
accepts every hint the others accept, so a check that passes in one place routes in all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from lc_support import LOOPBACK

from gleitzeit_llm import LoadBalancingStrategy, RequestError
from gleitzeit_llm.workflow import validate_request
from langchain_gleitzeit import ChatOllamaPool

pytestmark = LOOPBACK

MESSAGES = [{"role": "user", "content": "hi"}]
# route_request's own argument names for the hints it takes (fallback_model is the provider's).
MANAGER_ARGS = {
    "load_balancing_strategy": "strategy",
    "instance_tags": "tags",
    "require_gpu": "require_gpu",
    "max_latency": "max_latency",
    "session_id": "session_id",
}


def sites(provider: Any, hint: str, value: Any) -> dict[str, Callable[[], Any]]:
    """Each entry point, called with ``hint=value``."""
    calls = {
        "provider": lambda: provider.chat_sync("llama3.2", MESSAGES, **{hint: value}),
        "workflow": lambda: validate_request("llm/chat", {"model": "llama3.2", "prompt": "hi", hint: value}),
        "langchain": lambda: ChatOllamaPool(model="llama3.2", pool=provider).invoke("hi", **{hint: value}),
    }
    if hint in MANAGER_ARGS:
        calls["manager"] = lambda: provider.manager.route_request("llama3.2", **{MANAGER_ARGS[hint]: value})
    return calls


def error_of(call: Callable[[], Any]) -> Any:
    try:
        call()
    except Exception as exc:  # the test compares what each site raised
        return exc
    return None


@pytest.mark.parametrize(
    ("hint", "value"),
    [
        ("load_balancing_strategy", "fastest"),
        ("load_balancing_strategy", 5),
        ("instance_tags", "gpu"),
        ("instance_tags", ["gpu", 1]),
        ("require_gpu", "maybe"),
        ("require_gpu", 1),
        ("fallback_model", " "),
        ("max_latency", -5),
        ("max_latency", True),
        ("session_id", ""),
        ("session_id", 7),
    ],
)
def test_a_bad_hint_fails_alike_at_every_entry_point(emulated_pool: Any, hint: str, value: Any) -> None:
    provider, (emulator,) = emulated_pool(1, tags=[["gpu"]], health_checks=False)
    errors = {site: error_of(call) for site, call in sites(provider, hint, value).items()}
    expected = errors["provider"]
    assert isinstance(expected, RequestError) and expected.field == hint
    got = {site: (type(e).__name__, getattr(e, "field", None), str(e)) for site, e in errors.items()}
    assert got == dict.fromkeys(errors, ("RequestError", hint, str(expected)))
    assert emulator.requests_for("/api/chat") == []  # rejected before any instance was picked


@pytest.mark.parametrize(
    ("hint", "value"),
    [
        ("load_balancing_strategy", "least loaded"),
        ("load_balancing_strategy", "Round-Robin"),
        ("load_balancing_strategy", LoadBalancingStrategy.LATENCY_BASED),
        ("instance_tags", ["GPU"]),
        ("instance_tags", ("gpu",)),
        ("instance_tags", {"gpu"}),
        ("require_gpu", True),
        ("fallback_model", "llama3.2:1b"),
        ("max_latency", 60_000),
        ("session_id", "conversation-1"),
    ],
)
def test_a_good_hint_is_accepted_at_every_entry_point(emulated_pool: Any, hint: str, value: Any) -> None:
    provider, (emulator,) = emulated_pool(1, tags=[["gpu"]], health_checks=False)
    errors = {site: error_of(call) for site, call in sites(provider, hint, value).items()}
    assert errors == dict.fromkeys(errors)
    assert len(emulator.requests_for("/api/chat")) == 2  # the provider's call and LangChain's
