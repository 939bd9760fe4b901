"""Shared test configuration: the emulator fixtures (ollama_emulator, ollama_emulators)."""

pytest_plugins = ["gleitzeit_llm.testing.pytest_plugin"]
