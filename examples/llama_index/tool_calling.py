"""Tool calling through the pool: chat_with_tools, predict_and_call and a FunctionAgent.

Routing hints and ``model=`` reach every tool-calling path (LlamaIndex's Ollama LLM drops them
there). With emulated servers the tool calls are scripted; a real model decides by itself.

    .venv/bin/python examples/llama_index/tool_calling.py
"""

from __future__ import annotations

import asyncio

from _common import MODEL, emulated, servers
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool

from gleitzeit_llm import OllamaPoolProvider
from llama_index.llms.gleitzeit import OllamaPool


def get_weather(city: str) -> str:
    """The current weather in a city."""
    return {"Tokyo": "sunny, 24 °C", "Berlin": "rain, 12 °C"}.get(city, "unknown")


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


TOOLS = [FunctionTool.from_defaults(fn=get_weather), FunctionTool.from_defaults(fn=multiply)]


def main() -> None:
    specs = [{"id": "gpu-1", "tags": ["gpu"]}, {"id": "cpu-1", "tags": ["cpu"]}]
    with servers(specs) as instances, OllamaPoolProvider(instances=instances) as pool:
        if emulated():
            for emulator in instances.emulators.values():
                emulator.script_tool_calls(
                    [{"name": "get_weather", "arguments": {"city": "Tokyo"}}], persistent=True
                )
        llm = OllamaPool(model=MODEL, pool=pool)

        response = llm.chat_with_tools(TOOLS, user_msg="What's the weather in Tokyo?", instance_tags=["gpu"])
        served_by = response.raw["pool"]["instance_id"]
        for call in llm.get_tool_calls_from_response(response, error_on_no_tool_call=False):
            print(f"chat_with_tools: {call.tool_name}({call.tool_kwargs}) on {served_by}")

        output = llm.predict_and_call(TOOLS, user_msg="What's the weather in Tokyo?", instance_tags=["gpu"])
        print(f"predict_and_call: {output}")

        asyncio.run(run_agent(llm))


async def run_agent(llm: OllamaPool) -> None:
    agent = FunctionAgent(tools=TOOLS, llm=llm, system_prompt="Answer with the tools.")
    result = await agent.run("Is it sunny in Tokyo?")
    print(f"agent: {result} (tools called: {[c.tool_name for c in result.tool_calls]})")


if __name__ == "__main__":
    main()
