"""The promptcache bench runs at the load it claims: its tokens are the emulator's tokens, its
all-miss service time is that of the prompts the emulator sees, its arrivals keep their rate."""

from __future__ import annotations

import random

from bench.scenarios.promptcache import PARAMS, _arrivals, _miss_time, _text
from gleitzeit_llm.testing.promptcache import render_messages, tokenize


def test_filler_text_is_as_many_tokens_as_asked_for() -> None:
    rng = random.Random(1)
    for tokens in (1, 30, 3000):
        assert len(tokenize(_text(rng, tokens))) == tokens


def test_the_all_miss_time_counts_the_prompts_the_emulator_evaluates() -> None:
    p = dict(PARAMS["full"], context_tokens=300)
    rng = random.Random(2)
    messages = [{"role": "system", "content": _text(rng, p["context_tokens"])}]
    prompts = []
    for _ in range(p["turns"]):
        messages.append({"role": "user", "content": _text(rng, p["question_tokens"])})
        prompts.append(len(tokenize(render_messages(messages))))
        messages.append({"role": "assistant", "content": _text(rng, p["reply_tokens"])})
    mean_prompt = sum(prompts) / len(prompts)
    expected = (
        p["ttft"] + mean_prompt / p["prompt_tokens_per_second"] + p["reply_tokens"] / p["tokens_per_second"]
    )
    assert abs(_miss_time(p) - expected) < 1e-9
    single = len(tokenize(render_messages(messages[:2])))
    expected = p["ttft"] + single / p["prompt_tokens_per_second"] + p["reply_tokens"] / p["tokens_per_second"]
    assert abs(_miss_time(p, chat=False) - expected) < 1e-9


def test_arrivals_keep_their_count_within_the_span_of_the_rate() -> None:
    for seed in range(20):
        times = _arrivals(random.Random(seed), 40, rate=2.0)
        assert len(times) == 40 and times == sorted(times)
        assert times[0] >= 0.0 and times[-1] <= 40 / 2.0
