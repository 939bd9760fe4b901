"""LlamaIndex messages to Ollama's, and Ollama's answers (plus the pool's facts) back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    ChatResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)

__all__ = ["StreamState", "chat_response", "to_ollama_messages", "usage"]

# LlamaIndex roles Ollama does not know, and the Ollama role that means the same.
_ROLES = {
    MessageRole.FUNCTION.value: "tool",
    MessageRole.CHATBOT.value: "assistant",
    MessageRole.MODEL.value: "assistant",
    MessageRole.DEVELOPER.value: "system",
}


def to_ollama_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Ollama ``/api/chat`` messages for LlamaIndex ones (text, images, thinking, tool calls and results)."""
    converted: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}  # tool call id -> tool name, to name the tool results
    for message in messages:
        role = _ROLES.get(message.role.value, message.role.value)
        out: dict[str, Any] = {"role": role, "content": ""}
        calls: list[dict[str, Any]] = []
        for block in message.blocks:
            if isinstance(block, TextBlock):
                out["content"] += block.text
            elif isinstance(block, ImageBlock):
                out.setdefault("images", []).append(
                    block.resolve_image(as_base64=True).read().decode("utf-8")
                )
            elif isinstance(block, ThinkingBlock):
                if block.content:
                    out["thinking"] = block.content
            elif isinstance(block, ToolCallBlock):
                calls.append(_tool_call(block.tool_name, block.tool_kwargs, block.tool_call_id))
            elif isinstance(block, CachePoint):
                continue  # a prompt-caching marker of other providers; Ollama has none
            else:
                raise ValueError(f"Ollama messages cannot carry {type(block).__name__}")
        # Older chat histories keep tool calls in additional_kwargs.
        seen = {(c["function"]["name"], str(c["function"]["arguments"])) for c in calls}
        for legacy in message.additional_kwargs.get("tool_calls") or ():
            function = legacy.get("function", legacy) if isinstance(legacy, dict) else {}
            name = function.get("name", "")
            if (name, str(function.get("arguments", {}))) not in seen:
                calls.append(_tool_call(name, function.get("arguments", {}), legacy.get("id")))
        if calls:
            out["tool_calls"] = calls
            for call in calls:
                if call.get("id"):
                    tool_names[call["id"]] = call["function"]["name"]
        if role == "tool":
            call_id = message.additional_kwargs.get("tool_call_id")
            name = message.additional_kwargs.get("name") or message.additional_kwargs.get("tool_name")
            if call_id:
                out["tool_call_id"] = call_id
                name = name or tool_names.get(call_id)
            if name:
                out["tool_name"] = name
        converted.append(out)
    return converted


def _tool_call(name: str, arguments: Any, call_id: str | None) -> dict[str, Any]:
    call: dict[str, Any] = {
        "function": {"name": name, "arguments": arguments if arguments is not None else {}}
    }
    if call_id:
        call["id"] = call_id
    return call


def usage(raw: dict[str, Any]) -> dict[str, int] | None:
    """OpenAI-style token counts (what LlamaIndex's token counters read), when Ollama sent counts."""
    prompt, completion = raw.get("prompt_eval_count"), raw.get("eval_count")
    if prompt is None or completion is None:
        return None
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _blocks(
    content: str, thinking: str | None, tool_calls: Sequence[Any]
) -> list[TextBlock | ThinkingBlock | ToolCallBlock]:
    blocks: list[TextBlock | ThinkingBlock | ToolCallBlock] = []
    if thinking:
        blocks.append(ThinkingBlock(content=thinking))
    blocks.append(TextBlock(text=content))
    for call in tool_calls:
        blocks.append(
            ToolCallBlock(
                tool_call_id=call.id, tool_name=call.function.name, tool_kwargs=call.function.arguments
            )
        )
    return blocks


def _raw(response: Any, pool: Any) -> dict[str, Any]:
    raw: dict[str, Any] = response.model_dump(exclude_none=True)
    if pool is not None:
        raw["pool"] = pool.as_dict()
    counts = usage(raw)
    if counts is not None:
        raw["usage"] = counts
    return raw


def chat_response(response: Any) -> ChatResponse:
    """A LlamaIndex ChatResponse for a pool chat answer; ``raw`` holds Ollama's answer and ``pool``."""
    message = response.message
    return ChatResponse(
        message=ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=_blocks(message.content or "", message.thinking, message.tool_calls or ()),
        ),
        raw=_raw(response, response.pool),
    )


class StreamState:
    """Folds streamed chunks into the cumulative responses LlamaIndex expects from a stream.

    Each yielded response holds the whole message so far (text, thinking, tool calls) plus the
    chunk's ``delta``; agents read the tool calls from every one of them.
    """

    def __init__(self) -> None:
        self.content = ""
        self.thinking = ""
        self.tool_calls: list[Any] = []

    def add(self, chunk: Any, pool: Any) -> ChatResponse:
        message = chunk.message
        delta = message.content or ""
        self.content += delta
        self.thinking += message.thinking or ""
        if message.tool_calls:
            self.tool_calls.extend(message.tool_calls)
        return ChatResponse(
            message=ChatMessage(
                role=MessageRole.ASSISTANT,
                blocks=_blocks(self.content, self.thinking or None, self.tool_calls),
            ),
            delta=delta,
            raw=_raw(chunk, pool),
            additional_kwargs={"thinking_delta": message.thinking or None},
        )
