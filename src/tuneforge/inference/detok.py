"""Incremental detokenization with stop strings, for streaming.

Text is released only when it can no longer change: not while the last bytes are an incomplete
UTF-8 character, and not while the tail could still become a stop string.
"""

from __future__ import annotations


class TextStream:
    def __init__(self, tokenizer, stop: tuple[str, ...]):
        self._tok = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._ids: list[int] = []
        self._sent = 0  # characters of the decoded text already released
        self.stopped = False  # a stop string was found; the text before it is all released

    def push(self, token_id: int) -> str:
        """Add a generated token; return the text that is now final."""
        self._ids.append(token_id)
        text = self._tok.decode(self._ids, skip_special_tokens=True)
        if self._stop:
            hit = min(
                (i for i in (text.find(s, max(0, self._sent - len(s) + 1)) for s in self._stop) if i >= 0),
                default=-1,
            )
            if hit >= 0:
                self.stopped = True
                out, self._sent = text[self._sent : hit], hit
                return out
        end = len(text)
        if text.endswith("\ufffd"):
            end -= 1  # an incomplete multi-byte character: wait for its other bytes
        hold = 0  # hold back a tail that may still grow into a stop string
        for s in self._stop:
            for k in range(min(len(s) - 1, end - self._sent), hold, -1):
                if text[end - k : end] == s[:k]:
                    hold = k
                    break
        end -= hold
        if end <= self._sent:
            return ""
        out, self._sent = text[self._sent : end], end
        return out

    def flush(self) -> str:
        """At the end (length or EOS): release whatever was held back."""
        if self.stopped:
            return ""
        text = self._tok.decode(self._ids, skip_special_tokens=True)
        out, self._sent = text[self._sent :], len(text)
        return out
