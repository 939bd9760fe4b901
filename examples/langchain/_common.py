"""Shared plumbing of the LangChain examples: the servers helper of ``examples/_servers.py``.

``servers(...)`` starts emulated Ollama servers on 127.0.0.1, or hands over the real ones named
by ``GLEITZEIT_OLLAMA_INSTANCES`` / ``GLEITZEIT_OLLAMA_CONFIG``; ``MODEL`` is ``llama3.2`` unless
``GLEITZEIT_EXAMPLE_MODEL`` says otherwise. This module is not part of the library.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _servers import MODEL, Servers, emulated, servers

__all__ = ["MODEL", "Servers", "emulated", "servers"]
