"""Byte-level tokenizer: 256 byte tokens plus one start-of-sequence token. Needs no download."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from icl_core.errors import InputTextError

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
