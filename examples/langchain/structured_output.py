"""Structured output through the pool: a Pydantic object back instead of text.

``with_structured_output(Schema)`` uses Ollama's structured outputs (``format`` = the JSON
schema) by default; ``method="function_calling"`` asks for a tool call instead and
``method="json_mode"`` for any JSON. ``include_raw=True`` also returns the message, with the
pool's metadata.

    .venv/bin/python examples/langchain/structured_output.py
"""

from __future__ import annotations

from _common import MODEL, servers
from pydantic import BaseModel, Field

from langchain_gleitzeit import ChatOllamaPool


class City(BaseModel):
    """A city and a few facts about it."""

    name: str = Field(description="the city's name")
    country: str = Field(description="the country it is in")
    population_millions: float = Field(ge=0, description="inhabitants, in millions")
    landmarks: list[str] = Field(min_length=1, max_length=3, description="famous sights")


def main() -> None:
    with servers(3) as instances:
        for emulator in instances.emulators.values():
            emulator.responder = None  # emulated servers then write JSON that fits the schema

        llm = ChatOllamaPool(model=MODEL, instances=instances, temperature=0)
        structured = llm.with_structured_output(City, include_raw=True)
        result = structured.invoke("Tell me about Kyoto.")
        city = result["parsed"]
        assert isinstance(city, City), result["parsing_error"]
        print(f"parsed: {city!r}")
        pool = result["raw"].response_metadata["pool"]
        print(f"City object from {pool['instance_id']}, {len(city.landmarks)} landmark(s)")
        llm.close()


if __name__ == "__main__":
    main()
