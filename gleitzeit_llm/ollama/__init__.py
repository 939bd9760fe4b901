"""The wire: Ollama's requests and responses, NDJSON streams, error classification, HTTP transport.

Everything the rest of gleitzeit-llm needs to talk to one Ollama server::

    from gleitzeit_llm.ollama import AsyncOllamaTransport, ChatRequest, Timeouts

    async with AsyncOllamaTransport("http://gpu1:11434", instance_id="gpu-1") as gpu1:
        reply = await gpu1.chat(ChatRequest(model="llama3.2", messages=[{"role": "user", "content": "hi"}]))
        print(reply.message.content, reply.queue_time, reply.tokens_per_second)

Failures raise the errors of :mod:`gleitzeit_llm.errors`; the status-to-error table is in
:mod:`gleitzeit_llm.ollama._classify`.
"""

from gleitzeit_llm.ollama._classify import parse_retry_after
from gleitzeit_llm.ollama.models import (
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    ListResponse,
    Message,
    ModelDetails,
    ModelInfo,
    ProcessResponse,
    RunningModel,
    ShowRequest,
    ShowResponse,
    ToolCall,
    ToolCallFunction,
    VersionResponse,
    aggregate_chat,
    aggregate_generate,
    fold_wire_chunks,
)
from gleitzeit_llm.ollama.names import model_key, normalize_model_name, same_model, spelling_key
from gleitzeit_llm.ollama.stream import NDJSONDecoder, aiter_ndjson, iter_ndjson
from gleitzeit_llm.ollama.timeouts import Timeouts
from gleitzeit_llm.ollama.transport import (
    AsyncOllamaTransport,
    AsyncResponseStream,
    OllamaTransport,
    ResponseStream,
)
from gleitzeit_llm.ollama.urls import parse_instance_url, redact_url

__all__ = [
    "AsyncOllamaTransport",
    "AsyncResponseStream",
    "ChatRequest",
    "ChatResponse",
    "EmbedRequest",
    "EmbedResponse",
    "GenerateRequest",
    "GenerateResponse",
    "ListResponse",
    "Message",
    "ModelDetails",
    "ModelInfo",
    "NDJSONDecoder",
    "OllamaTransport",
    "ProcessResponse",
    "ResponseStream",
    "RunningModel",
    "ShowRequest",
    "ShowResponse",
    "Timeouts",
    "ToolCall",
    "ToolCallFunction",
    "VersionResponse",
    "aggregate_chat",
    "aggregate_generate",
    "aiter_ndjson",
    "fold_wire_chunks",
    "iter_ndjson",
    "model_key",
    "normalize_model_name",
    "parse_instance_url",
    "parse_retry_after",
    "redact_url",
    "same_model",
    "spelling_key",
]
