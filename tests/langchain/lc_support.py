"""Helpers of the LangChain tests (the fixtures are in conftest.py): socket rules, the real-Ollama switch.

* Unit modules mark themselves ``NO_SOCKETS`` (pytest-socket: no socket may even be created, so
  constructing a model provably opens no connection); emulator modules mark themselves
  ``LOOPBACK`` (connections only to 127.0.0.1, plus the host of ``GLEITZEIT_TEST_OLLAMA_URL``).
* ``GLEITZEIT_TEST_OLLAMA_URL`` (one URL or a comma-separated list) names real Ollama servers for
  the few tests that need a model that understands its prompt; ``GLEITZEIT_TEST_OLLAMA_MODEL``
  picks its model (default ``llama3.2``, which can call tools).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import pytest

from gleitzeit_llm.testing import OllamaEmulator

REAL_OLLAMA_URLS = [
    url.strip() for url in os.environ.get("GLEITZEIT_TEST_OLLAMA_URL", "").split(",") if url.strip()
]
REAL_OLLAMA_MODEL = os.environ.get("GLEITZEIT_TEST_OLLAMA_MODEL", "").strip() or "llama3.2"
FAST = 0.01  # emulated seconds run 100x faster


def _allowed_hosts() -> list[str]:
    hosts = ["127.0.0.1"]
    for url in REAL_OLLAMA_URLS:
        host = urlsplit(url if "://" in url else f"http://{url}").hostname
        if host and host not in hosts:
            hosts.append(host)
    return hosts


#: Emulator modules: connections to loopback (and the configured real Ollama) only.
LOOPBACK = pytest.mark.allow_hosts(_allowed_hosts())
#: Unit modules: no sockets at all.
NO_SOCKETS = pytest.mark.disable_socket


def chat_bodies(*emulators: OllamaEmulator) -> list[dict[str, Any]]:
    """The bodies of the ``/api/chat`` requests the emulators received, oldest first."""
    records = [r for emulator in emulators for r in emulator.requests_for("/api/chat")]
    return [r.body for r in sorted(records, key=lambda r: r.started_at)]
