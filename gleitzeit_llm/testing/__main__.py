"""``python -m gleitzeit_llm.testing``: run emulated Ollama servers (see :mod:`.cli`)."""

from __future__ import annotations

import sys

from gleitzeit_llm.testing.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
