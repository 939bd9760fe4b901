# ruff: noqa: E501 - wire examples are kept verbatim, one JSON object per line
"""NDJSON readers: the same chunks whatever the byte boundaries, and every way a stream breaks."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gleitzeit_llm.errors import StreamInterruptedError
from gleitzeit_llm.ollama import NDJSONDecoder, aiter_ndjson, iter_ndjson

# A chat stream (from the reference) with multi-byte characters, so that some split points fall
# inside a UTF-8 sequence: "ü" is 2 bytes, "🌍" 4 bytes.
SAMPLE = (
    '{"model":"llama3.2","created_at":"2025-10-26T17:21:21.196249Z","message":{"role":"assistant","content":"Grüße"},"done":false}\n'
    '{"model":"llama3.2","created_at":"2025-10-26T17:21:21.207235Z","message":{"role":"assistant","content":" 🌍"},"done":false}\n'
    '{"model":"llama3.2","created_at":"2025-10-26T17:21:21.893120Z","message":{"role":"assistant","content":"!"},"done":true,"done_reason":"stop","total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}\n'
).encode()
EXPECTED = [json.loads(line) for line in SAMPLE.decode().splitlines()]


async def agen(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def acollect(pieces: Iterable[bytes], **kwargs: str) -> list[dict]:
    return [obj async for obj in aiter_ndjson(agen(pieces), **kwargs)]


def collect(pieces: Iterable[bytes], **kwargs: str) -> list[dict]:
    return list(iter_ndjson(pieces, **kwargs))


def test_whole_lines_give_the_expected_chunks() -> None:
    assert collect(SAMPLE.splitlines(keepends=True)) == EXPECTED
    assert EXPECTED[-1]["message"]["content"] == "!"  # a final chunk that carries content


def test_every_single_split_point_gives_the_same_chunks() -> None:
    for i in range(len(SAMPLE) + 1):
        assert collect([SAMPLE[:i], SAMPLE[i:]]) == EXPECTED, i


async def test_every_single_split_point_gives_the_same_chunks_async() -> None:
    for i in range(len(SAMPLE) + 1):
        assert await acollect([SAMPLE[:i], SAMPLE[i:]]) == EXPECTED, i


def test_one_byte_at_a_time() -> None:
    assert collect(SAMPLE[i : i + 1] for i in range(len(SAMPLE))) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=12))
def test_any_set_of_split_points_gives_the_same_chunks(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(SAMPLE)]
    assert collect(SAMPLE[a:b] for a, b in itertools.pairwise(points)) == EXPECTED


def test_all_lines_in_one_chunk() -> None:
    assert collect([SAMPLE]) == EXPECTED


def test_blank_lines_and_crlf_are_ignored() -> None:
    lines = SAMPLE.splitlines()
    data = b"\n" + lines[0] + b"\r\n\r\n" + lines[1] + b"\n \n" + lines[2] + b"\n\n"
    assert collect([data]) == EXPECTED


def test_a_last_line_without_newline_is_parsed() -> None:
    assert collect([SAMPLE.rstrip(b"\n")]) == EXPECTED


async def test_a_last_line_without_newline_is_parsed_async() -> None:
    assert await acollect([SAMPLE[:100], SAMPLE[100:].rstrip(b"\n")]) == EXPECTED


def test_an_error_line_after_status_200_interrupts_the_stream() -> None:
    lines = SAMPLE.splitlines(keepends=True)
    data = [lines[0], lines[1], b'{"error":"an error was encountered while running the model"}\n']
    received: list[dict] = []
    with pytest.raises(StreamInterruptedError) as info:
        for obj in iter_ndjson(data, instance="gpu-1", url="http://gpu1:11434"):
            received.append(obj)
    error = info.value
    assert received == EXPECTED[:2]
    assert error.chunks_received == 2
    assert error.ollama_message == "an error was encountered while running the model"
    assert (error.instance, error.url, error.status) == ("gpu-1", "http://gpu1:11434", 200)
    assert str(error) == (
        "instance 'gpu-1' (http://gpu1:11434): stream interrupted after 2 chunks: "
        "an error was encountered while running the model"
    )


async def test_an_error_line_after_status_200_interrupts_the_stream_async() -> None:
    lines = SAMPLE.splitlines(keepends=True)
    received = []
    with pytest.raises(StreamInterruptedError) as info:
        async for obj in aiter_ndjson(agen([lines[0], b'{"error":"boom"}'])):
            received.append(obj)
    assert received == EXPECTED[:1]
    assert info.value.chunks_received == 1 and info.value.ollama_message == "boom"


def test_an_error_line_as_the_very_first_line() -> None:
    with pytest.raises(StreamInterruptedError) as info:
        collect([b'{"error":"llama-server process has terminated: exit status 2"}\n'])
    assert info.value.chunks_received == 0
    assert info.value.ollama_message == "llama-server process has terminated: exit status 2"


@pytest.mark.parametrize(
    "bad_line",
    [
        b"<!DOCTYPE html><html>",
        b'{"model":"llama3.2","done":fal',
        b"[1, 2, 3]",
        b'"just a string"',
        b"\xff\xfe not utf-8",
        b"data: {}",
    ],
)
def test_a_line_that_is_not_a_json_object_is_not_ndjson(bad_line: bytes) -> None:
    first = SAMPLE.splitlines(keepends=True)[0]
    with pytest.raises(StreamInterruptedError, match="not NDJSON") as info:
        collect([first, bad_line + b"\n", SAMPLE])
    assert info.value.chunks_received == 1
    assert info.value.ollama_message is None


def test_a_stream_that_ends_without_done_is_truncated() -> None:
    first_two = b"".join(SAMPLE.splitlines(keepends=True)[:2])
    with pytest.raises(StreamInterruptedError, match="truncated") as info:
        collect([first_two[:50], first_two[50:]], instance="gpu-1", url="http://gpu1:11434")
    assert info.value.chunks_received == 2
    assert str(info.value).startswith("instance 'gpu-1' (http://gpu1:11434): stream truncated after 2 chunks")


async def test_a_stream_that_ends_mid_line_is_not_ndjson_async() -> None:
    with pytest.raises(StreamInterruptedError, match="not NDJSON") as info:
        await acollect([SAMPLE[:-40]])
    assert info.value.chunks_received == 2


@pytest.mark.parametrize("pieces", [[], [b""], [b"\n\n"]])
def test_an_empty_stream_is_truncated(pieces: list[bytes]) -> None:
    with pytest.raises(StreamInterruptedError, match="truncated") as info:
        collect(pieces)
    assert info.value.chunks_received == 0


def test_the_decoder_counts_chunks_and_notices_done() -> None:
    decoder = NDJSONDecoder()
    lines = SAMPLE.splitlines(keepends=True)
    assert decoder.feed(lines[0][:10]) == []
    assert decoder.feed(lines[0][10:] + lines[1]) == EXPECTED[:2]
    assert decoder.chunks_received == 2 and not decoder.done
    assert decoder.feed(lines[2]) == EXPECTED[2:]
    assert decoder.done
    assert decoder.close() == []
