"""One Ollama server over HTTP: :class:`AsyncOllamaTransport` and its sync twin :class:`OllamaTransport`.

One transport per instance, each with its own connection pool. Both faces share
:class:`~gleitzeit_llm.ollama._core.TransportCore` (request building, timeouts by phase, status
classification, parsing); only the I/O differs, and it is written once:
``ollama/_async/transport.py`` by hand, ``ollama/_sync/transport.py`` generated from it by
``scripts/unasync.py`` (``make unasync``; a test fails while the generated file is stale).
Every failure is one of the errors in :mod:`gleitzeit_llm.errors` (see
:mod:`gleitzeit_llm.ollama._classify` for the mapping)::

    async with AsyncOllamaTransport("http://gpu1:11434", instance_id="gpu-1") as gpu1:
        answer = await gpu1.chat({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})
        async with gpu1.stream_chat(request) as chunks:
            async for chunk in chunks:
                print(chunk.message.content, end="")

Streams are lazy: the request is sent on the first iteration, so a failure before the first chunk
(the one point where failing over is always safe) surfaces there. Leaving a stream early
(``break``, an exception, task cancellation) closes the response, which frees the connection and
makes Ollama stop generating for it; ``async with`` / ``aclose()`` do so at once.
"""

from gleitzeit_llm.ollama._async.transport import AsyncOllamaTransport, AsyncResponseStream
from gleitzeit_llm.ollama._sync.transport import OllamaTransport, ResponseStream

__all__ = ["AsyncOllamaTransport", "AsyncResponseStream", "OllamaTransport", "ResponseStream"]
