"""Character tokenizer: the vocabulary is the sorted set of the corpus's characters."""
from __future__ import annotations

import numpy as np

from .errors import FfnlensError


class UnknownCharacters(FfnlensError):
    """A text holds characters the vocabulary lacks."""

    def __init__(self, chars: list[str]):
        self.chars = chars
        shown = ", ".join(repr(c) for c in chars[:20]) + (" ..." if len(chars) > 20 else "")
        super().__init__(f"characters not in the model's vocabulary: {shown}")


class CharTokenizer:
    def __init__(self, chars: str):
        if len(set(chars)) != len(chars):
            raise ValueError("vocabulary has repeated characters")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` outside the vocabulary, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.stoi))

    def encode(self, text: str) -> np.ndarray:
        bad = self.unknown(text)
        if bad:
            raise UnknownCharacters(bad)
        dtype = np.uint8 if len(self.chars) <= 256 else np.int32
        if dtype is np.uint8 and text.isascii() and max(self.stoi.values(), default=0) < 256:
            lut = np.zeros(128, dtype=np.uint8)
            for c, i in self.stoi.items():
                lut[ord(c)] = i
            return lut[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
        return np.fromiter((self.stoi[c] for c in text), dtype=dtype, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)
