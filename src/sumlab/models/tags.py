"""Speaker tags and masks of the data (``#Person1#``, ``#PhoneNumber#``, found by sumlab.text.tags) as whole tokens."""

from __future__ import annotations

from typing import Any

from transformers import AddedToken


def add_tags(model: Any, tokenizer: Any, tags: list[str]) -> int:
    """Add tags as whole, non-special tokens (special ones would be dropped when decoding summaries)."""
    before = len(tokenizer)
    # Also for tags the vocabulary has as a piece: only an added token is guaranteed to stay whole.
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in tags])
    if model is not None and len(tokenizer) != before:
        model.resize_token_embeddings(len(tokenizer))
    return len(tokenizer) - before
