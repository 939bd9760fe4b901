"""The emulator resolves model names the way Ollama does (ollama/ollama types/model/name.go and
server/routes.go): every form of a name that real Ollama accepts is served, case is folded only
on the routes where Ollama folds it, and the 404 text is Ollama's."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gleitzeit_llm.testing import OllamaEmulator

USER = [{"role": "user", "content": "hi"}]
MODELS = [
    "library/mistral",
    "hf.co/org/repo:Q4_K_M",
    "alice/model:v1",
    "host:5000/team/m",
    "nomic-embed-text",
]

# Each spelling real Ollama resolves to the same manifest file (ParseName + Filepath).
FORMS = {
    "mistral:latest": [
        "mistral",
        "mistral:latest",
        "library/mistral",
        "library/mistral:latest",
        "registry.ollama.ai/library/mistral",
        "registry.ollama.ai/library/mistral:latest",
        "https://registry.ollama.ai/library/mistral:latest",
    ],
    "hf.co/org/repo:Q4_K_M": ["hf.co/org/repo:Q4_K_M", "https://hf.co/org/repo:Q4_K_M"],
    "alice/model:v1": ["alice/model:v1", "registry.ollama.ai/alice/model:v1"],
    "host:5000/team/m:latest": ["host:5000/team/m", "host:5000/team/m:latest"],
}
CASES = [(listed, form) for listed, forms in FORMS.items() for form in forms]


def _emu(version: str) -> Iterator[OllamaEmulator]:
    with OllamaEmulator(models=MODELS, time_scale=0.001, version=version) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def emu() -> Iterator[OllamaEmulator]:
    yield from _emu("0.12.6")


@pytest.fixture(scope="module")
def client(emu: OllamaEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=10, verify=False) as c:
        yield c


def test_tags_lists_the_shortest_form(client: httpx.Client) -> None:
    names = {m["name"] for m in client.get("/api/tags").json()["models"]}
    assert names == {
        "mistral:latest",
        "hf.co/org/repo:Q4_K_M",
        "alice/model:v1",
        "host:5000/team/m:latest",
        "nomic-embed-text:latest",
    }


@pytest.mark.parametrize(("listed", "form"), CASES)
def test_every_form_ollama_accepts_is_served(client: httpx.Client, listed: str, form: str) -> None:
    chat = client.post("/api/chat", json={"model": form, "messages": USER, "stream": False})
    assert chat.status_code == 200, chat.text
    assert chat.json()["model"] == form  # Ollama echoes the request's spelling
    generate = client.post("/api/generate", json={"model": form, "prompt": "hi", "stream": False})
    assert generate.status_code == 200, generate.text
    show = client.post("/api/show", json={"model": form})
    assert show.status_code == 200, show.text


@pytest.mark.parametrize("form", ["nomic-embed-text", "library/nomic-embed-text:latest"])
def test_every_form_is_served_by_the_embedding_routes(client: httpx.Client, form: str) -> None:
    embed = client.post("/api/embed", json={"model": form, "input": "hi"})
    assert embed.status_code == 200, embed.text
    legacy = client.post("/api/embeddings", json={"model": form, "prompt": "hi"})
    assert legacy.status_code == 200, legacy.text


@pytest.mark.parametrize(
    "form", ["Mistral", "MISTRAL:LATEST", "Library/mistral", "REGISTRY.OLLAMA.AI/library/mistral"]
)
def test_case_folds_where_ollama_folds_it(client: httpx.Client, form: str) -> None:
    # generate, embed and show look the name up with getExistingName (strings.EqualFold per part)
    assert (
        client.post("/api/generate", json={"model": form, "prompt": "hi", "stream": False}).status_code == 200
    )
    assert client.post("/api/show", json={"model": form}).status_code == 200


@pytest.mark.parametrize("form", ["Mistral", "Library/mistral"])
def test_chat_before_0_15_5_opens_the_requested_spelling(client: httpx.Client, form: str) -> None:
    # 0.5.2-0.15.4 ChatHandler: GetModel(req.Model), a case-sensitive file path on Linux
    answer = client.post("/api/chat", json={"model": form, "messages": USER, "stream": False})
    assert answer.status_code == 404
    assert answer.json() == {"error": f"model '{form}' not found"}


def test_chat_from_0_15_5_folds_case_too() -> None:
    for emulator in _emu("0.15.5"):
        with httpx.Client(base_url=emulator.url, timeout=10, verify=False) as c:
            answer = c.post("/api/chat", json={"model": "Mistral", "messages": USER, "stream": False})
    assert answer.status_code == 200, answer.text


def test_before_0_5_2_every_route_opens_the_requested_spelling() -> None:
    for emulator in _emu("0.5.1"):
        with httpx.Client(base_url=emulator.url, timeout=10, verify=False) as c:
            generate = c.post("/api/generate", json={"model": "Mistral", "prompt": "hi", "stream": False})
            show = c.post("/api/show", json={"model": "Mistral"})
            lower = c.post(
                "/api/generate", json={"model": "library/mistral", "prompt": "hi", "stream": False}
            )
    assert (generate.status_code, generate.json()) == (404, {"error": "model 'Mistral' not found"})
    assert show.status_code == 404
    assert lower.status_code == 200


def test_the_legacy_embeddings_route_keeps_case(client: httpx.Client) -> None:
    # EmbeddingsHandler never calls getExistingName; the scheduler's 404 wording
    answer = client.post("/api/embeddings", json={"model": "Nomic-Embed-Text", "prompt": "hi"})
    assert answer.status_code == 404
    assert answer.json() == {"error": 'model "Nomic-Embed-Text" not found, try pulling it first'}


@pytest.mark.parametrize(
    "form", ["mistra", "library/mistral:7b", "bob/mistral", "other.host/library/mistral"]
)
def test_an_unknown_name_gets_ollamas_404(client: httpx.Client, form: str) -> None:
    for path, body in [
        ("/api/chat", {"model": form, "messages": USER}),
        ("/api/generate", {"model": form, "prompt": "hi"}),
        ("/api/show", {"model": form}),
    ]:
        answer = client.post(path, json=body)
        assert (answer.status_code, answer.json()) == (404, {"error": f"model '{form}' not found"}), path
    # EmbedHandler: getExistingName, then the scheduler's handleScheduleError wording
    embed = client.post("/api/embed", json={"model": form, "input": "hi"})
    assert (embed.status_code, embed.json()) == (
        404,
        {"error": f'model "{form}" not found, try pulling it first'},
    )


@pytest.mark.parametrize("form", ["mistral:", "/mistral", "library//mistral", "host/name:space/model:tag"])
def test_a_name_ollama_rejects_is_rejected(client: httpx.Client, form: str) -> None:
    # !ParseName(...).IsValid(): chat answers 400, generate keeps its 404 for compatibility
    chat = client.post("/api/chat", json={"model": form, "messages": USER})
    assert (chat.status_code, chat.json()) == (400, {"error": "model is required"})
    generate = client.post("/api/generate", json={"model": form, "prompt": "hi"})
    assert (generate.status_code, generate.json()) == (404, {"error": f"model '{form}' not found"})


def test_requests_for_finds_every_spelling(emu: OllamaEmulator, client: httpx.Client) -> None:
    emu.clear_log()
    client.post("/api/generate", json={"model": "library/mistral", "prompt": "hi", "stream": False})
    client.post("/api/generate", json={"model": "Mistral:latest", "prompt": "hi", "stream": False})
    assert len(emu.requests_for("/api/generate", model="registry.ollama.ai/library/mistral")) == 2
