"""Speaker tags and masks of the data (``#Person1#``, ``#PhoneNumber#``) as whole vocabulary tokens."""

from __future__ import annotations

import re
from typing import Any, Iterable

from transformers import AddedToken


def find_tags(texts: Iterable[str], pattern: str) -> list[str]:
    """Speaker tags and masks in the data, e.g. #Person1#, #PhoneNumber#: sorted for a stable vocabulary."""
    regex = re.compile(pattern)
    return sorted({m for t in texts for m in regex.findall(t)})


def add_tags(model: Any, tokenizer: Any, tags: list[str]) -> int:
    """Add tags as whole, non-special tokens (special ones would be dropped when decoding summaries)."""
    before = len(tokenizer)
    # Also for tags the vocabulary has as a piece: only an added token is guaranteed to stay whole.
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in tags])
    if model is not None and len(tokenizer) != before:
        model.resize_token_embeddings(len(tokenizer))
    return len(tokenizer) - before
