"""Model names compare the way Ollama resolves them: ``llama3.2`` is ``llama3.2:latest``."""

from __future__ import annotations

import pytest

from gleitzeit_llm.errors import RequestError
from gleitzeit_llm.ollama import model_key, normalize_model_name, same_model


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("llama3.2:latest", "llama3.2:latest"),
        ("llama3.2:3b-instruct-q4_K_M", "llama3.2:3b-instruct-q4_K_M"),
        ("llama3.2:", "llama3.2:latest"),
        ("  qwen3  ", "qwen3:latest"),
        ("hf.co/org/repo:Q4_K_M", "hf.co/org/repo:Q4_K_M"),
        ("hf.co/org/repo", "hf.co/org/repo:latest"),
        ("library/llama3.2", "llama3.2:latest"),
        ("registry.ollama.ai/library/llama3.2:1b", "llama3.2:1b"),
        ("registry.ollama.ai/alice/model", "alice/model:latest"),
        ("alice/model", "alice/model:latest"),
        ("localhost:5000/team/model", "localhost:5000/team/model:latest"),
        ("localhost:5000/team/model:v2", "localhost:5000/team/model:v2"),
        ("library/sub/model", "library/sub/model:latest"),
    ],
)
def test_normalize_adds_latest_only_when_the_last_segment_has_no_tag(name: str, canonical: str) -> None:
    assert normalize_model_name(name) == canonical


def test_normalize_keeps_case() -> None:
    assert normalize_model_name("Llama3.2") == "Llama3.2:latest"


@pytest.mark.parametrize("name", ["", "   ", "hf.co/org/", ":latest"])
def test_an_empty_model_name_is_the_callers_mistake(name: str) -> None:
    with pytest.raises(RequestError) as info:
        normalize_model_name(name)
    assert info.value.field == "model"


def test_a_non_string_model_name_is_rejected() -> None:
    with pytest.raises(RequestError):
        normalize_model_name(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("llama3.2", "llama3.2:latest", True),
        ("library/llama3.2", "llama3.2:latest", True),
        ("LLaMA3.2", "llama3.2:latest", True),
        ("llama3.2:1b", "llama3.2", False),
        ("llama3.2", "llama3", False),
        ("hf.co/org/repo:Q4_K_M", "hf.co/org/repo:q4_k_m", True),
        ("alice/model", "model", False),
    ],
)
def test_same_model(a: str, b: str, same: bool) -> None:
    assert same_model(a, b) is same
    assert same_model(b, a) is same


def test_model_key_is_a_stable_dictionary_key() -> None:
    installed = {model_key(n) for n in ["llama3.2:latest", "qwen3:8b"]}
    assert model_key("llama3.2") in installed
    assert model_key("qwen3") not in installed
