"""NDJSON streams: Ollama's streamed responses, one JSON object per line.

The readers take the raw byte chunks as they come off the socket and yield one parsed ``dict``
per line, whatever the chunk boundaries (a line split across chunks, even inside a multi-byte
UTF-8 character, several lines in one chunk, blank lines, a last line without ``\\n``). They
also turn the three ways a stream breaks after status 200 into
:class:`~gleitzeit_llm.errors.StreamInterruptedError`:

- an ``{"error": "..."}`` line (Ollama's mid-stream error; ``ollama_message`` holds its text),
- a line that is not a JSON object ("not NDJSON"),
- the end of the body before a chunk with ``"done": true`` ("truncated").

``chunks_received`` on the error says how many chunks the caller already got.

    >>> list(iter_ndjson([b'{"response":"a","done":fa', b'lse}\\n{"done":true}']))
    [{'response': 'a', 'done': False}, {'done': True}]
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

from gleitzeit_llm.errors import StreamInterruptedError
from gleitzeit_llm.ollama._classify import describe_instance

__all__ = ["NDJSONDecoder", "aiter_ndjson", "iter_ndjson"]

# str.decode once per block plus raw_decode skips json.loads' per-call encoding sniffing.
_raw_decode = json.JSONDecoder().raw_decode


class NDJSONDecoder:
    """Incremental NDJSON parser shared by the async and sync readers (only I/O differs).

    ``feed(data)`` returns the objects completed by ``data``; ``close()`` parses a last line
    without a newline and raises if no ``done`` chunk arrived.
    """

    __slots__ = ("_buffer", "chunks_received", "done", "instance", "url")

    def __init__(self, *, instance: str | None = None, url: str | None = None) -> None:
        self._buffer = b""
        self.chunks_received = 0
        self.done = False
        self.instance = instance
        self.url = url

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        # Splitting bytes (not text) on b"\n" is safe for UTF-8: no byte of a multi-byte
        # character is 0x0A, so a character split across chunks waits in the buffer whole and
        # the complete lines before the last newline always decode.
        if self._buffer:
            data = self._buffer + data
        end = data.rfind(b"\n")
        if end == -1:
            self._buffer = data
            return []
        self._buffer = data[end + 1 :]
        return self._parse_block(data[:end])

    def close(self) -> list[dict[str, Any]]:
        tail, self._buffer = self._buffer, b""
        parsed = self._parse_block(tail) if tail else []
        if not self.done:
            raise self._error(
                f"stream truncated after {self.chunks_received} chunk"
                f"{'' if self.chunks_received == 1 else 's'}: the body ended without a 'done' chunk",
            )
        return parsed

    def _parse_block(self, block: bytes) -> list[dict[str, Any]]:
        """Parse complete lines; one UTF-8 decode per network chunk, not per line."""
        parsed = []
        try:
            lines = block.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            lines = []
            for raw in block.split(b"\n"):  # find the offending line, counting the good ones
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise self._not_ndjson(raw.decode("utf-8", "replace")) from None
                obj = self._parse(line)
                if obj is not None:
                    parsed.append(obj)
        for line in lines:
            obj = self._parse(line)
            if obj is not None:
                parsed.append(obj)
        return parsed

    def _parse(self, line: str) -> dict[str, Any] | None:
        line = line.strip()
        if not line:
            return None
        try:
            obj, end = _raw_decode(line)
        except ValueError:
            obj, end = None, -1
        if end != len(line) or not isinstance(obj, dict):
            raise self._not_ndjson(line)
        if "error" in obj:
            message = obj["error"]
            if not isinstance(message, str):
                message = json.dumps(message)
            raise self._error(
                f"stream interrupted after {self.chunks_received} chunks: {message}", ollama_message=message
            )
        self.chunks_received += 1
        if obj.get("done") is True:
            self.done = True
        return obj

    def _not_ndjson(self, line: str) -> StreamInterruptedError:
        return self._error(
            f"response is not NDJSON (after {self.chunks_received} chunks, got {line[:80]!r}); "
            "it does not look like Ollama"
        )

    def _error(self, what: str, *, ollama_message: str | None = None) -> StreamInterruptedError:
        return StreamInterruptedError(
            f"{describe_instance(self.instance, self.url)}: {what}",
            chunks_received=self.chunks_received,
            instance=self.instance,
            url=self.url,
            status=200,
            ollama_message=ollama_message,
        )


async def aiter_ndjson(
    chunks: AsyncIterable[bytes], *, instance: str | None = None, url: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Yield one dict per NDJSON line of the async byte iterator ``chunks``.

    ``instance`` and ``url`` (already redacted) name the server in errors.
    """
    decoder = NDJSONDecoder(instance=instance, url=url)
    async for data in chunks:
        for obj in decoder.feed(data):
            yield obj
    for obj in decoder.close():
        yield obj


def iter_ndjson(
    chunks: Iterable[bytes], *, instance: str | None = None, url: str | None = None
) -> Iterator[dict[str, Any]]:
    """Sync twin of :func:`aiter_ndjson`."""
    decoder = NDJSONDecoder(instance=instance, url=url)
    for data in chunks:
        yield from decoder.feed(data)
    yield from decoder.close()
