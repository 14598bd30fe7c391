"""Streamed text never splits a multi-byte UTF-8 character into U+FFFD."""

from __future__ import annotations

import pytest

from tuneforge.inference.detok import TextStream
from tuneforge.training.tiny import build_tiny_tokenizer

TEXT = "Café 😀 naïve 日本 — ok"


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def test_tiny_bpe_splits_these_characters_across_tokens(tok):
    ids = tok.encode(TEXT, add_special_tokens=False)
    pieces = [tok.decode([i]) for i in ids]
    assert "\ufffd" in "".join(pieces)  # otherwise the test below would prove nothing


@pytest.mark.parametrize("stop", [(), ("ok",), ("日本 —",)])
def test_streamed_pieces_are_whole_characters(tok, stop):
    stream = TextStream(tok, stop)
    pieces = []
    for token in tok.encode(TEXT, add_special_tokens=False):
        pieces.append(stream.push(token))
        if stream.stopped:
            break
    pieces.append(stream.flush())
    assert not any("\ufffd" in p for p in pieces), pieces
    expected = TEXT.split(stop[0])[0] if stop else TEXT
    assert "".join(pieces) == expected
