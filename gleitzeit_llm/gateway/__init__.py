"""``gleitzeit-llm serve``: the pool behind Ollama's (and OpenAI's) own HTTP API.

Needs the ``gateway`` extra (Starlette, uvicorn): ``pip install 'gleitzeit-llm[gateway]'``.
The core never imports this package. See docs/gateway.md.
"""

from __future__ import annotations

from gleitzeit_llm.gateway.app import create_app
from gleitzeit_llm.gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "create_app"]
