"""Shared plumbing of the LlamaIndex examples (not an example itself).

It reuses ``examples/_servers.py``: emulated Ollama servers on 127.0.0.1 by default, your servers
when ``GLEITZEIT_OLLAMA_INSTANCES`` (or ``GLEITZEIT_OLLAMA_CONFIG``) is set. With real servers, set
``GLEITZEIT_EXAMPLE_MODEL`` / ``GLEITZEIT_EXAMPLE_EMBED_MODEL`` / ``GLEITZEIT_EXAMPLE_THINKING_MODEL``
to models they have if they are not llama3.2, nomic-embed-text and qwen3.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/, for _servers

from _servers import MODEL, Servers, emulated, servers

__all__ = ["DATA", "EMBED_MODEL", "MODEL", "THINKING_MODEL", "Servers", "emulated", "servers"]

#: The embedding model and the thinking model of the examples.
EMBED_MODEL = os.environ.get("GLEITZEIT_EXAMPLE_EMBED_MODEL", "").strip() or "nomic-embed-text"
THINKING_MODEL = os.environ.get("GLEITZEIT_EXAMPLE_THINKING_MODEL", "").strip() or "qwen3"
#: The folder of text files the RAG examples index.
DATA = Path(__file__).resolve().parent / "data"
