"""Tokenizers: ours (bytes: 256 byte tokens plus a start token, no download) and the BPE tokenizers of
TransformerLens-format models imported from the Hub (their tokenizer.json, stored in the run)."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from icl_core.errors import CheckpointError, InputTextError
from icl_core.model.config import ModelConfig

BOS = 256
VOCAB_SIZE = 257


@dataclass(frozen=True)
class EncodedText:
    tokens: torch.Tensor  # 1-D long tensor, BOS first
    truncated: bool  # the text was longer than the context and was cut
    non_ascii_chars: int  # characters that became several byte tokens


def encode(text: str, n_ctx: int | None = None, add_bos: bool = True) -> EncodedText:
    """Encode text to byte tokens; raises InputTextError for empty text, truncates to n_ctx."""
    if not text:
        raise InputTextError("The text is empty: type at least one character.")
    raw = text.encode("utf-8")
    non_ascii = sum(1 for ch in text if ord(ch) > 127)
    ids = ([BOS] if add_bos else []) + list(raw)
    truncated = n_ctx is not None and len(ids) > n_ctx
    if truncated:
        ids = ids[:n_ctx]
    return EncodedText(torch.tensor(ids, dtype=torch.long), truncated, non_ascii)


def token_label(token: int) -> str:
    """A short, readable label for one token (for charts and tables)."""
    if token == BOS:
        return "<s>"
    if token == 32:
        return "␣"
    if token == 10:
        return "⏎"
    if token == 9:
        return "⇥"
    if 33 <= token < 127:
        return chr(token)
    return f"\\x{token:02x}"


def token_labels(tokens: torch.Tensor | list[int]) -> list[str]:
    return [token_label(int(t)) for t in tokens]


def decode(tokens: torch.Tensor | list[int]) -> str:
    data = bytes(int(t) for t in tokens if int(t) != BOS)
    return data.decode("utf-8", errors="replace")


class ByteTokenizer:
    """Our runs' tokenizer as an object, for code that serves every model family."""

    name = "bytes"
    bos = BOS
    vocab_size = VOCAB_SIZE
    key = "bytes"  # identifies the tokenizer in cache keys

    def encode(self, text: str, n_ctx: int | None = None) -> EncodedText:
        return encode(text, n_ctx)

    def labels(self, tokens: torch.Tensor | list[int]) -> list[str]:
        return token_labels(tokens)

    def decode(self, tokens: torch.Tensor | list[int]) -> str:
        return decode(tokens)

    def single_token(self, text: str) -> int | None:
        """The byte of `text` if it is exactly one byte, else None."""
        raw = text.encode("utf-8")
        return raw[0] if len(raw) == 1 else None

    # Equal by kind, not identity: a deep-copied model carries a copy of its tokenizer.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteTokenizer)

    def __hash__(self) -> int:
        return hash(self.key)


BYTES = ByteTokenizer()
_BOS_CANDIDATES = ("<|endoftext|>", "<|BOS|>", "<bos>", "<s>")  # GPT-NeoX / TinyStories tokenizers use the first
_VISIBLE = str.maketrans({" ": "␣", "\n": "⏎", "\t": "⇥"})


class BPETokenizer:
    """A Hugging Face `tokenizer.json` (the `tokenizers` package; no `transformers`), with TransformerLens's BOS
    handling: a start token is prepended, the tokenizer's BOS (its end-of-text token where it has no other)."""

    def __init__(self, path: Path, name: str = "") -> None:
        from tokenizers import Tokenizer

        try:
            raw = Path(path).read_bytes()
            self._tok = Tokenizer.from_str(raw.decode("utf-8"))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise CheckpointError(path, f"not a readable tokenizer.json ({exc})") from exc
        # Equal (and hashed) by content: two runs sharing a tokenizer share its tokenized held-out text and probes.
        self.sha256 = hashlib.sha256(raw).hexdigest()
        self.key = self.sha256
        self.name = name or str(path)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        bos = next((self._tok.token_to_id(t) for t in _BOS_CANDIDATES if self._tok.token_to_id(t) is not None), None)
        if bos is None:
            raise CheckpointError(path, f"the tokenizer has no start token (looked for {', '.join(_BOS_CANDIDATES)})")
        self.bos = int(bos)

    def encode(self, text: str, n_ctx: int | None = None) -> EncodedText:
        if not text:
            raise InputTextError("The text is empty: type at least one character.")
        ids = [self.bos, *self._tok.encode(text, add_special_tokens=False).ids]
        truncated = n_ctx is not None and len(ids) > n_ctx
        if truncated:
            ids = ids[:n_ctx]
        return EncodedText(torch.tensor(ids, dtype=torch.long), truncated, 0)

    def labels(self, tokens: torch.Tensor | list[int]) -> list[str]:
        """Each token as the text it stands for, whitespace made visible (not the byte-level 'Ġ' spelling)."""
        return [
            "<s>" if int(t) == self.bos else (self._tok.decode([int(t)]) or f"#{int(t)}").translate(_VISIBLE)
            for t in tokens
        ]

    def decode(self, tokens: torch.Tensor | list[int]) -> str:
        return self._tok.decode([int(t) for t in tokens if int(t) != self.bos])

    def single_token(self, text: str) -> int | None:
        """The id of `text` if it is exactly one token, else None."""
        ids = self._tok.encode(text, add_special_tokens=False).ids if text else []
        return int(ids[0]) if len(ids) == 1 else None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BPETokenizer) and other.sha256 == self.sha256

    def __hash__(self) -> int:
        return hash(self.sha256)


Tokenizer = ByteTokenizer | BPETokenizer


class TokenizedModel:
    """Mixin for every model family: analyses draw their probes and held-out text in the model's own tokens (as
    TransformerLens's model.tokenizer)."""

    tokenizer: Tokenizer | None
    cfg: ModelConfig

    def require_tokenizer(self) -> Tokenizer:
        """The model's tokenizer; ValueError for a BPE model built without one (load it from its run)."""
        if self.tokenizer is None:
            raise ValueError(f"this model reads {self.cfg.tokenizer} tokens: load it from its run to get its tokenizer")
        return self.tokenizer


def load_tokenizer(name: str, run_dir: Path | None = None) -> Tokenizer:
    """The tokenizer a model config names: ours ("bytes"), or the tokenizer.json a Hub import stored in its run."""
    if name == BYTES.name:
        return BYTES
    path = Path(run_dir or ".") / "tokenizer" / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(path, f"the run's tokenizer ({name}) is missing: import the run again")
    return _load_bpe(str(path.resolve()), path.stat().st_mtime_ns, name)


@functools.lru_cache(maxsize=8)
def _load_bpe(path: str, mtime: int, name: str) -> BPETokenizer:
    return BPETokenizer(Path(path), name)
