"""LangChain integration for gleitzeit-llm (a pool of Ollama servers)."""

__all__: list[str] = []
