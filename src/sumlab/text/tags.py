"""Speaker tags and masks of the data (``#Person1#``, ``#PhoneNumber#``), found by data.special_token_pattern."""

from __future__ import annotations

import re
from collections.abc import Iterable


def find_tags(texts: Iterable[str], pattern: str) -> list[str]:
    """Speaker tags and masks in the data, e.g. #Person1#, #PhoneNumber#: sorted for a stable vocabulary."""
    regex = re.compile(pattern)
    return sorted({m for t in texts for m in regex.findall(t)})
