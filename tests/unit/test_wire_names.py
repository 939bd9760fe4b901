"""Model names compare the way Ollama resolves them: ``llama3.2`` is ``llama3.2:latest``."""

from __future__ import annotations

import pytest

from gleitzeit_llm.errors import RequestError
from gleitzeit_llm.ollama import model_key, normalize_model_name, same_model, spelling_key


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("llama3.2:latest", "llama3.2:latest"),
        ("llama3.2:3b-instruct-q4_K_M", "llama3.2:3b-instruct-q4_K_M"),
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


# -- Ollama's own parser ---------------------------------------------------------------------
# Cases from ollama/ollama types/model/name_test.go (fetched at fb30760, 2026-08-21):
# TestParseNameParts (wantFilepath: names with the same file path are the same model),
# TestDisplayShortest (what /api/tags shows) and TestNameIsValid (names with an empty part).


@pytest.mark.parametrize(
    ("name", "same_as"),
    [
        # TestParseNameParts: "registry.ollama.ai/library/dolphin-mistral:7b-v2.6-dpo-laser-q6_K"
        (
            "registry.ollama.ai/library/dolphin-mistral:7b-v2.6-dpo-laser-q6_K",
            "dolphin-mistral:7b-v2.6-dpo-laser-q6_K",
        ),
        # "scheme://host:port/namespace/model:tag": the scheme is not part of the file path
        ("scheme://host:port/namespace/model:tag", "host:port/namespace/model:tag"),
        # "host/namespace/model" -> host/namespace/model/latest
        ("host/namespace/model", "host/namespace/model:latest"),
        # "host:port/namespace/model" -> host:port/namespace/model/latest (a port is not a tag)
        ("host:port/namespace/model", "host:port/namespace/model:latest"),
        # "namespace/model" -> registry.ollama.ai/namespace/model/latest
        ("namespace/model", "registry.ollama.ai/namespace/model:latest"),
        # "model" -> registry.ollama.ai/library/model/latest
        ("model", "registry.ollama.ai/library/model:latest"),
        ("h/nn/mm:t", "h/nn/mm:t"),
        # the brief's cases: every spelling of the default registry and namespace
        ("library/mistral", "mistral"),
        ("registry.ollama.ai/library/mistral:latest", "mistral:latest"),
        ("hf.co/org/repo:Q4_K_M", "hf.co/org/repo:Q4_K_M"),
        # EqualFold: every part compares case-insensitively when matching what /api/tags lists
        ("Llama3.2", "llama3.2:latest"),
        ("REGISTRY.OLLAMA.AI/Library/Mistral:LATEST", "mistral"),
        ("HF.co/Org/Repo:q4_k_m", "hf.co/org/repo:Q4_K_M"),
    ],
)
def test_names_with_the_same_ollama_file_path_are_one_model(name: str, same_as: str) -> None:
    assert model_key(name) == model_key(same_as)
    assert same_model(name, same_as)


@pytest.mark.parametrize(
    ("name", "other"),
    [
        (
            "host/library/model:tag",
            "model:tag",
        ),  # TestDisplayShortest: library is only default on the default host
        ("namespace/model", "model"),
        ("hf.co/org/repo:Q4", "hf.co/org/repo"),  # a tag after the last "/" is the tag
        ("localhost:5000/team/model", "localhost/team/model:5000"),
    ],
)
def test_names_with_different_file_paths_are_different_models(name: str, other: str) -> None:
    assert model_key(name) != model_key(other)


@pytest.mark.parametrize(
    ("name", "shortest"),
    [
        # TestDisplayShortest, case kept (defaults compared with EqualFold, as Ollama does)
        ("registry.ollama.ai/library/model:latest", "model:latest"),
        ("registry.ollama.ai/library/model:tag", "model:tag"),
        ("registry.ollama.ai/namespace/model:tag", "namespace/model:tag"),
        ("host/namespace/model:tag", "host/namespace/model:tag"),
        ("host/library/model:tag", "host/library/model:tag"),
        ("Registry.Ollama.AI/Library/Model:Tag", "Model:Tag"),
        ("https://registry.ollama.ai/library/mistral", "mistral:latest"),
    ],
)
def test_normalize_is_ollamas_display_shortest(name: str, shortest: str) -> None:
    assert normalize_model_name(name) == shortest


# TestNameIsValid: a part promised by its separator but empty ("mm:", "n/m:", "/nn/mm", "//mm",
# "hh//") makes the name invalid; Ollama never resolves it, so it is the caller's mistake.
@pytest.mark.parametrize("name", ["mm:", "n/m:", "/nn/mm", "//mm", "hh//", "//", "llama3.2:"])
def test_a_name_with_an_empty_part_is_the_callers_mistake(name: str) -> None:
    with pytest.raises(RequestError) as info:
        normalize_model_name(name)
    assert info.value.field == "model"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("mistral", "mistral:latest", True),
        ("library/mistral", "mistral", True),
        ("registry.ollama.ai/library/mistral:latest", "mistral", True),
        ("https://registry.ollama.ai/library/mistral:latest", "mistral", True),
        ("Llama3.2", "llama3.2", False),  # a case-sensitive lookup finds one and not the other
        ("Library/mistral", "library/mistral", False),  # the manifest directory differs
        ("hf.co/org/repo:Q4_K_M", "hf.co/org/repo:q4_k_m", False),
    ],
)
def test_spelling_key_keeps_the_case_of_every_part(a: str, b: str, same: bool) -> None:
    assert (spelling_key(a) == spelling_key(b)) is same
    assert model_key(a) == model_key(b)  # while /api/tags matching folds case
