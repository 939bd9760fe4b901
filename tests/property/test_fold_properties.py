"""Folding raw wire chunks once gives exactly what folding the validated chunks gives."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gleitzeit_llm.ollama import (
    ChatResponse,
    GenerateResponse,
    aggregate_chat,
    aggregate_generate,
    fold_wire_chunks,
)

text = st.text(max_size=5)
maybe_text = st.one_of(st.none(), text)
tool_call = st.builds(
    lambda name, n: {"function": {"name": name, "arguments": {"n": n}}},
    st.sampled_from(["a", "b"]),
    st.integers(),
)
tool_calls = st.one_of(st.none(), st.lists(tool_call, max_size=2))
logprobs = st.one_of(
    st.none(), st.lists(st.fixed_dictionaries({"token": text, "logprob": st.floats(-5, 0)}), max_size=2)
)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


chat_part = st.builds(
    lambda content, thinking, calls, lp: _drop_none(
        {
            "model": "m",
            "message": _drop_none(
                {"role": "assistant", "content": content, "thinking": thinking, "tool_calls": calls}
            ),
            "logprobs": lp,
            "done": False,
        }
    ),
    text,
    maybe_text,
    tool_calls,
    logprobs,
)
gen_part = st.builds(
    lambda response, thinking, calls, lp: _drop_none(
        {
            "model": "m",
            "response": response,
            "thinking": thinking,
            "tool_calls": calls,
            "logprobs": lp,
            "done": False,
        }
    ),
    text,
    maybe_text,
    tool_calls,
    logprobs,
)
final = {"done": True, "done_reason": "stop", "eval_count": 3, "prompt_eval_count": 2, "total_duration": 9}


@given(st.lists(chat_part, min_size=1, max_size=6), st.booleans())
def test_chat_fold_matches_aggregate_chat(parts: list[dict[str, Any]], done: bool) -> None:
    if done:
        parts[-1] = {**parts[-1], **final}
    folded = ChatResponse.model_validate(fold_wire_chunks(parts, chat=True))
    expected = aggregate_chat([ChatResponse.model_validate(p) for p in parts])
    assert folded.model_dump(exclude_none=True) == expected.model_dump(exclude_none=True)


@given(st.lists(gen_part, min_size=1, max_size=6), st.booleans())
def test_generate_fold_matches_aggregate_generate(parts: list[dict[str, Any]], done: bool) -> None:
    if done:
        parts[-1] = {**parts[-1], **final}
    folded = GenerateResponse.model_validate(fold_wire_chunks(parts, chat=False))
    expected = aggregate_generate([GenerateResponse.model_validate(p) for p in parts])
    assert folded.model_dump(exclude_none=True) == expected.model_dump(exclude_none=True)


def test_the_chunks_are_not_changed() -> None:
    parts = [{"model": "m", "message": {"role": "assistant", "content": "a"}, "done": False}] * 2
    before = [dict(p, message=dict(p["message"])) for p in parts]
    fold_wire_chunks(parts, chat=True)
    assert parts == before
