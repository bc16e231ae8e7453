"""Observation spaces for image + text tasks, and the vocabulary that text ids index.

Text observations are token ids in a ``Box(0, V - 1, (L,), int64)`` (pad = 0). A ``Box``, not a
``MultiDiscrete``: SB3 would one-hot a MultiDiscrete. The space carries its :class:`Vocabulary`, so an
extractor can decode ids back to words (e.g. for a pretrained tokenizer) without seeing the env.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from gymnasium import spaces

PAD = "<pad>"
UNK = "<unk>"


class Vocabulary:
    """A fixed, ordered word list: id 0 is padding, id 1 the unknown word.

    :param words: the task's words, in a stable order; duplicates and the reserved tokens are dropped.
    """

    def __init__(self, words: Iterable[str]):
        ordered = [PAD, UNK]
        seen = set(ordered)
        for word in words:
            if not isinstance(word, str) or not word or any(c.isspace() for c in word):
                raise ValueError(f"Vocabulary words must be non-empty strings without spaces; got {word!r}")
            if word not in seen:
                seen.add(word)
                ordered.append(word)
        self.words: tuple[str, ...] = tuple(ordered)
        self._ids = {w: i for i, w in enumerate(self.words)}

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.words == other.words

    def __hash__(self) -> int:
        return hash(self.words)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"

    def id(self, word: str) -> int:
        """The id of ``word``; raises ``KeyError`` naming the word when it is not in the vocabulary."""
        try:
            return self._ids[word]
        except KeyError:
            raise KeyError(f"word {word!r} is not in the vocabulary ({len(self)} words)") from None

    def encode(self, text: str | Sequence[str], length: int | None = None, strict: bool = True) -> np.ndarray:
        """Words (a whitespace-separated string or a list) to int64 ids, right-padded to ``length``.

        :param strict: raise on an unknown word (default) instead of mapping it to ``<unk>``.
        """
        tokens = text.split() if isinstance(text, str) else list(text)
        ids = [self.id(t) if strict else self._ids.get(t, self.unk_id) for t in tokens]
        if length is not None:
            if len(ids) > length:
                raise ValueError(f"text has {len(ids)} tokens, more than the length {length}: {' '.join(tokens)!r}")
            ids = ids + [self.pad_id] * (length - len(ids))
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids to a string; padding is skipped. Raises ``ValueError`` on an id outside the vocabulary."""
        words = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if not 0 <= i < len(self.words):
                raise ValueError(f"token id {i} is outside the vocabulary [0, {len(self.words)})")
            if i != self.pad_id:
                words.append(self.words[i])
        return " ".join(words)


class TextSpace(spaces.Box):
    """Token ids ``int64[L]`` in ``[0, len(vocabulary) - 1]``, padding 0; carries its vocabulary."""

    def __init__(self, vocabulary: Vocabulary, max_length: int, seed: int | None = None):
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1; got {max_length}")
        self.vocabulary = vocabulary
        self.max_length = int(max_length)
        super().__init__(low=0, high=len(vocabulary) - 1, shape=(self.max_length,), dtype=np.int64, seed=seed)

    def __repr__(self) -> str:
        return f"TextSpace({self.vocabulary!r}, max_length={self.max_length})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TextSpace)
            and self.vocabulary == other.vocabulary
            and self.max_length == other.max_length
        )

    __hash__ = None  # type: ignore[assignment]


#: the largest observation image side an env accepts: past it, pre-rendered sprite tables alone take gigabytes
MAX_IMAGE_SIZE = 512


def image_space(height: int, width: int) -> spaces.Box:
    """A channel-first RGB image space ``uint8[3, H, W]`` (SB3 recognises it as an image)."""
    return spaces.Box(low=0, high=255, shape=(3, height, width), dtype=np.uint8)


def find_text_space(space: spaces.Space) -> TextSpace | None:
    """The ``text`` entry of a Dict space when it is a :class:`TextSpace`, else ``None``."""
    if isinstance(space, spaces.Dict):
        text = space.spaces.get("text")
        if isinstance(text, TextSpace):
            return text
    return None
