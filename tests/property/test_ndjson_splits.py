"""The NDJSON reader gives the same chunks whatever the byte boundaries of the transport."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gleitzeit_llm.ollama.stream import NDJSONDecoder

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
chunk = st.fixed_dictionaries({"model": st.just("m"), "message": st.fixed_dictionaries({"content": texts})})


@settings(max_examples=300, deadline=None)
@given(st.lists(chunk, min_size=1, max_size=6), st.data())
def test_any_byte_split_gives_the_same_chunks(chunks: list[dict], data: st.DataObject) -> None:  # type: ignore[type-arg]
    lines = [{**c, "done": False} for c in chunks] + [
        {"model": "m", "message": {"content": ""}, "done": True}
    ]
    body = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=8)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    decoder = NDJSONDecoder()
    parsed = [item for piece in pieces for item in decoder.feed(piece)] + decoder.close()
    assert parsed == lines
