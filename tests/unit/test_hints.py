"""RoutingHints.parse: the one validator of per-call hints, and the strategy/scorer check."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gleitzeit_llm import LoadBalancingStrategy, RequestError, RoutingHints
from gleitzeit_llm import provider as provider_module
from gleitzeit_llm.hints import HINT_NAMES
from gleitzeit_llm.routing.strategies import SCORERS, check_scorers


@pytest.mark.parametrize("member", list(LoadBalancingStrategy))
def test_every_spelling_the_config_accepts_parses_to_the_canonical_name(
    member: LoadBalancingStrategy,
) -> None:
    spellings = [
        member,
        member.value,
        member.value.upper(),
        member.value.replace("_", " "),
        member.value.replace("_", "-").title(),
    ]
    for spelling in spellings:
        hints = RoutingHints.parse({"load_balancing_strategy": spelling})
        assert hints.load_balancing_strategy == member.value
        assert type(hints.load_balancing_strategy) is str


def test_parse_reads_only_the_hints_and_keeps_their_values() -> None:
    given = {
        "model": "llama3.2",
        "load_balancing_strategy": "least loaded",
        "instance_tags": ["gpu", "large"],
        "require_gpu": False,
        "fallback_model": "llama3.2:1b",
        "max_latency": 250,
    }
    assert RoutingHints.parse(given) == RoutingHints(
        "least_loaded", ("gpu", "large"), False, "llama3.2:1b", 250
    )
    assert RoutingHints.parse({"model": "llama3.2"}) == RoutingHints()
    assert RoutingHints.parse({"instance_tags": frozenset({"gpu"})}).instance_tags == ("gpu",)


def test_pop_from_takes_out_the_hints_and_nothing_else() -> None:
    params: dict[str, Any] = {"model": "m", "options": {"temperature": 0}, "instance_tags": ("gpu",)}
    assert RoutingHints.pop_from(params) == RoutingHints(instance_tags=("gpu",))
    assert params == {"model": "m", "options": {"temperature": 0}}


@pytest.mark.parametrize(
    ("hint", "value", "message"),
    [
        ("load_balancing_strategy", "fastest", "valid strategies: least_loaded, round_robin"),
        ("load_balancing_strategy", "least-loaded!", "unknown strategy 'least-loaded!'; valid strategies:"),
        ("load_balancing_strategy", 5, "load_balancing_strategy: unknown strategy 5; valid strategies:"),
        ("instance_tags", "gpu", "instance_tags must be a list of strings, got 'gpu'"),
        ("instance_tags", ["gpu", 1], "instance_tags must be a list of strings, got ['gpu', 1]"),
        ("instance_tags", (t for t in ["gpu"]), "instance_tags must be a list of strings"),
        ("require_gpu", "yes", "require_gpu must be true or false, got 'yes'"),
        ("fallback_model", "  ", "fallback_model must be a model name"),
        ("max_latency", 0, "max_latency must be a positive number of milliseconds, got 0"),
        ("max_latency", True, "max_latency must be a positive number of milliseconds, got True"),
        ("max_latency", "fast", "max_latency must be a positive number of milliseconds"),
        ("session_id", "", "session_id must be a non-empty string (the conversation's id), got ''"),
        ("session_id", 42, "session_id must be a non-empty string (the conversation's id), got 42"),
    ],
)
def test_a_bad_hint_is_a_request_error_naming_it_and_the_fix(hint: str, value: Any, message: str) -> None:
    with pytest.raises(RequestError) as info:
        RoutingHints.parse({hint: value})
    assert info.value.field == hint
    assert hint in str(info.value) and message in str(info.value)


def test_the_hint_names_are_the_fields_and_every_copy_is_that_list() -> None:
    assert tuple(f.name for f in dataclasses.fields(RoutingHints)) == HINT_NAMES
    assert provider_module.HINT_NAMES is HINT_NAMES
    assert provider_module.RoutingHints is RoutingHints


def test_merged_lets_the_call_override_the_defaults() -> None:
    default = RoutingHints(instance_tags=("gpu",), require_gpu=True, max_latency=100)
    call = RoutingHints.parse({"require_gpu": False, "load_balancing_strategy": "weighted"})
    assert default.merged(call) == RoutingHints("weighted", ("gpu",), False, None, 100)


def test_session_id_parses_merges_and_is_popped_with_the_other_hints() -> None:
    assert RoutingHints.parse({"session_id": "chat-7"}).session_id == "chat-7"
    default = RoutingHints(session_id="a")
    assert default.merged(RoutingHints()).session_id == "a"
    assert default.merged(RoutingHints(session_id="b")).session_id == "b"
    params: dict[str, Any] = {"model": "m", "session_id": "chat-7"}
    assert RoutingHints.pop_from(params) == RoutingHints(session_id="chat-7")
    assert params == {"model": "m"}


# -- the strategy enum and the scorer table -----------------------------------------------------


def test_every_strategy_has_a_scorer_and_every_scorer_a_strategy() -> None:
    assert set(SCORERS) == {member.value for member in LoadBalancingStrategy}
    check_scorers([member.value for member in LoadBalancingStrategy], SCORERS)  # what import runs


def test_a_strategy_without_a_scorer_fails_naming_it() -> None:
    with pytest.raises(RuntimeError, match=r"'fastest' has no scorer in SCORERS"):
        check_scorers([*SCORERS, "fastest"], SCORERS)


def test_a_scorer_without_a_strategy_fails_naming_it() -> None:
    with pytest.raises(RuntimeError, match=r"scorer 'fastest' is no LoadBalancingStrategy") as info:
        check_scorers(list(SCORERS), {**SCORERS, "fastest": SCORERS["least_loaded"]})
    assert "routing/strategies.py" in str(info.value)
