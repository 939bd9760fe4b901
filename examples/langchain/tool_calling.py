"""Tool calling through the pool: bind_tools, the model's tool call, the tool result, the answer.

A small agent loop by hand. With real servers the model decides which tool to call; the
emulated servers are scripted to call ``get_weather`` (they do not understand prompts).

    .venv/bin/python examples/langchain/tool_calling.py
"""

from __future__ import annotations

from _common import MODEL, servers
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.tools import tool

from langchain_gleitzeit import ChatOllamaPool


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"It is 21 degrees and sunny in {city}."


@tool
def get_time(city: str) -> str:
    """Get the local time in a city."""
    return f"It is 14:05 in {city}."


TOOLS = {t.name: t for t in (get_weather, get_time)}


def main() -> None:
    with servers(3) as instances:
        for emulator in instances.emulators.values():  # emulated servers only
            emulator.script_tool_calls(
                [{"name": "get_weather", "arguments": {"city": "Tokyo"}}], persistent=True
            )

        model = ChatOllamaPool(model=MODEL, instances=instances, temperature=0)
        llm = model.bind_tools(list(TOOLS.values()))
        messages: list[BaseMessage] = [HumanMessage("What is the weather in Tokyo right now?")]
        for _ in range(3):  # the model may call tools a few times before it answers
            reply = llm.invoke(messages)
            messages.append(reply)
            if not reply.tool_calls:
                break
            served_by = reply.response_metadata["pool"]["instance_id"]
            for call in reply.tool_calls:
                print(f"tool call: {call['name']}({call['args']}) served by {served_by}")
                messages.append(TOOLS[call["name"]].invoke(call))  # a ToolMessage answering the call
        print(f"answer: {messages[-1].content}")
        model.close()


if __name__ == "__main__":
    main()
