"""The adapter's hint and option names come from the core's lists and match langchain-ollama's."""

from __future__ import annotations

from langchain_ollama import ChatOllama, OllamaEmbeddings
from lc_support import NO_SOCKETS

from gleitzeit_llm.hints import HINT_NAMES
from gleitzeit_llm.ollama.models import OPTION_NAMES
from langchain_gleitzeit import ChatOllamaPool, OllamaPoolEmbeddings
from langchain_gleitzeit._utils import HINT_FIELDS, OPTION_FIELDS, is_option, option_fields
from langchain_gleitzeit.embeddings import _OPTION_FIELDS as EMBED_OPTION_FIELDS

pytestmark = NO_SOCKETS


def test_the_hint_fields_are_the_cores_hint_names() -> None:
    assert HINT_FIELDS is HINT_NAMES
    for model in (ChatOllamaPool, OllamaPoolEmbeddings):
        assert set(HINT_NAMES) <= set(model.model_fields)


def test_every_option_field_is_an_ollama_option_or_one_langchain_still_sends() -> None:
    assert all(map(is_option, OPTION_FIELDS))
    assert {name for name in OPTION_FIELDS if name not in OPTION_NAMES} == {"tfs_z"}
    assert not is_option("keep_alive") and not is_option("instance_tags")


def test_the_option_fields_are_chatollamas_and_ollamaembeddings() -> None:
    chat = [name for name in option_fields(ChatOllama.model_fields) if name != "stop"]  # stop: separate
    assert list(OPTION_FIELDS) == chat
    assert set(OPTION_FIELDS) <= set(ChatOllamaPool.model_fields)
    assert option_fields(OllamaEmbeddings.model_fields) == EMBED_OPTION_FIELDS
