"""Test tooling: an emulated Ollama server that speaks the real wire format.

>>> from gleitzeit_llm.testing import OllamaEmulator
>>> with OllamaEmulator(models=["llama3.2"], time_scale=0.01) as emu:  # doctest: +SKIP
...     httpx.post(f"{emu.url}/api/chat", json={"model": "llama3.2", "messages": [...]})

* :class:`OllamaEmulator` -- one server in this process (a background thread).
* :class:`EmulatorProcess` -- the same server in a child process (for kill -9 and benchmarks).
* :class:`EmulatedModel`, :class:`Faults`, :class:`RequestRecord`, :class:`Reply`,
  :class:`GenerationRequest` -- what you configure it with and what it reports.
* pytest fixtures ``ollama_emulator`` and ``ollama_emulators`` in
  :mod:`gleitzeit_llm.testing.pytest_plugin`.
* ``python -m gleitzeit_llm.testing --instances 3`` runs emulators from the command line.
"""

from gleitzeit_llm.testing.emulator import DEFAULT_MODELS, OllamaEmulator
from gleitzeit_llm.testing.faults import BUSY_MESSAGE, Faults
from gleitzeit_llm.testing.generation import GenerationRequest, Reply, Responder
from gleitzeit_llm.testing.models import EmulatedModel, normalize_name
from gleitzeit_llm.testing.process import EmulatorProcess
from gleitzeit_llm.testing.requestlog import RequestRecord
from gleitzeit_llm.testing.settings import Settings

__all__ = [
    "BUSY_MESSAGE",
    "DEFAULT_MODELS",
    "EmulatedModel",
    "EmulatorProcess",
    "Faults",
    "GenerationRequest",
    "OllamaEmulator",
    "Reply",
    "RequestRecord",
    "Responder",
    "Settings",
    "normalize_name",
]
