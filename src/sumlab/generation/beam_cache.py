"""Beam search without re-copying the cross-attention cache at every step (transformers 5.x).

At each beam-search step transformers reorders the whole ``EncoderDecoderCache`` along the selected
beams: the self-attention keys/values (which do differ between beams) *and* the cross-attention
keys/values, which are computed from the encoder output expanded ``num_beams`` times and so are
identical for every beam of one input. Beams are only ever reordered within their own input, so
copying the cross-attention part is an identity that costs a full gather of
``layers x 2 x (batch*beams) x heads x source_len x d_head`` per generated token - most of a small
model's decoding time on long inputs, and the reason larger beam batches got *slower*.

``fast_beam_cache()`` replaces ``EncoderDecoderCache.reorder_cache`` for the duration of a block with
one that reorders the self-attention cache only. It touches an internal API, so it applies only
where it was checked: a transformers version in ``TESTED`` whose ``reorder_cache`` still reorders the
two caches the way this module expects (tests/test_predict_beam_cache.py holds the parity test;
tests/test_predict.py checks whole predictions with it on and off).
Anywhere else the block runs unchanged.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import transformers
from packaging.version import Version

TESTED = (Version("5.0"), Version("6.0"))  # [low, high): the 5.x releases share this beam-search cache code
_lock = threading.RLock()
_depth = 0
_original = None


def _cache_class() -> type | None:
    try:
        from transformers.cache_utils import EncoderDecoderCache
    except ImportError:
        return None
    return EncoderDecoderCache


def supported() -> bool:
    """True where skipping the cross-attention reorder was verified to leave outputs unchanged."""
    if not TESTED[0] <= Version(Version(transformers.__version__).base_version) < TESTED[1]:
        return False
    cls = _cache_class()
    if cls is None:
        return False
    try:
        source = inspect.getsource(cls.reorder_cache if _original is None else _original)
    except (OSError, TypeError):
        return False
    # The method must be exactly "reorder both sub-caches": anything else is code we never checked.
    expected = (
        "self.self_attention_cache.reorder_cache(beam_idx)",
        "self.cross_attention_cache.reorder_cache(beam_idx)",
    )
    body = [
        line.strip() for line in source.splitlines()[1:] if line.strip() and not line.strip().startswith(('"', "#"))
    ]
    return body == list(expected)


def _reorder_self_attention_only(self, beam_idx):  # type: ignore[no-untyped-def]
    # Cross-attention keys/values are identical across one input's beams: reordering them is an identity.
    self.self_attention_cache.reorder_cache(beam_idx)


@contextmanager
def fast_beam_cache(enabled: bool = True) -> Iterator[bool]:
    """Within the block, beam search leaves the cross-attention cache in place; yields whether it applies."""
    global _depth, _original
    if not enabled or not supported():
        yield False
        return
    cls = _cache_class()
    with _lock:
        if _depth == 0:
            _original = cls.__dict__["reorder_cache"]
            cls.reorder_cache = _reorder_self_attention_only
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                cls.reorder_cache = _original
                _original = None
