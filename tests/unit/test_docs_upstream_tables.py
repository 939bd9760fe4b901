"""The adapter pages list every constructor argument of the upstream classes they replace (#14).

A user swapping ``ChatOllama`` or LlamaIndex's ``Ollama`` for the pool class looks up each argument
they pass in a table (accepted, honoured, differs how); a new upstream field must get its row.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _table_names(page: str) -> set[str]:
    """Every `name` in the first cell of a Markdown table row of ``page``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    cells = re.findall(r"^\| ([^|]*)\|", text, flags=re.MULTILINE)
    return {name for cell in cells for name in re.findall(r"`([A-Za-z_]+)`", cell)}


def test_langchain_page_has_a_row_for_every_upstream_argument() -> None:
    langchain_ollama = pytest.importorskip("langchain_ollama")
    from langchain_core.language_models import BaseChatModel

    upstream = set(langchain_ollama.ChatOllama.model_fields) | set(
        langchain_ollama.OllamaEmbeddings.model_fields
    )
    missing = sorted(upstream - set(BaseChatModel.model_fields) - _table_names("langchain.md"))
    assert missing == []


def test_llama_index_page_has_a_row_for_every_upstream_argument() -> None:
    ollama_llm = pytest.importorskip("llama_index.llms.ollama")
    ollama_embedding = pytest.importorskip("llama_index.embeddings.ollama")
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.llms.function_calling import FunctionCallingLLM

    names = _table_names("llama_index.md")
    llm = set(ollama_llm.Ollama.model_fields) - set(FunctionCallingLLM.model_fields)
    embedding = set(ollama_embedding.OllamaEmbedding.model_fields) - set(BaseEmbedding.model_fields)
    assert sorted((llm | embedding) - names) == []
