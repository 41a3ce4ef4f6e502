"""Prompt text shared by training and prediction: defaults, the chat prompt and its template checks.

Decided here once: the causal separator, the default chat turns, and the fixed date Llama 3 templates get.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Optional

from sumlab.core.errors import SumlabError

DEFAULT_SEPARATOR = "\nTL;DR:\n"  # causal models without a chat template: between the dialogue and the summary
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant that summarizes dialogues."
DEFAULT_USER_PROMPT = "Summarize the following dialogue in a few sentences.\n\n{text}"
T5_PREFIX = "summarize: "  # what T5-type checkpoints were pretrained to read before a text to summarize
TEMPLATE_DATE = "26 Jul 2024"  # Llama 3.1+'s own fallback; a fixed date keeps training and prediction prompts equal
TEXT_SLOT = (
    "\ue000sumlab-text\ue000"  # stands for the dialogue while the chat template renders (private-use code points)
)


def prompt_fields(template: str) -> list[str]:
    """The {placeholders} of model.prompt.user besides {text}; one line when it is no valid template or lacks {text}."""
    try:
        parsed = [
            (name, spec or conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None
        ]
    except ValueError as ex:
        raise SumlabError(
            f"model.prompt.user is not a valid template ({ex}): "
            "write placeholders as {text}, literal braces as {{ }}"
        ) from None
    bad = [name for name, extra in parsed if extra or not name.isidentifier()]
    if bad:
        raise SumlabError(
            f"model.prompt.user placeholder {{{bad[0]}}} is not a plain column name: use {{text}} or {{column}}"
        )
    if "text" not in [name for name, _ in parsed]:
        raise SumlabError(
            "model.prompt.user has no {text} placeholder, so the dialogue would never reach the model: "
            f"add {{text}} to {template!r}"
        )
    return [name for name, _ in parsed if name != "text"]


@dataclass(frozen=True)
class ChatPrompt:
    """Prompting through the tokenizer's chat template: a system turn, a user turn holding the dialogue,
    the summary as the assistant's answer followed by its end-of-turn token."""

    system: Optional[str]  # None or "": no system turn
    user: str  # a template: {text} is the dialogue, {column} any other data column
    end_of_turn: tuple[str, ...] = ()  # the first ends the learnt answer; any stops generation; () = EOS

    @classmethod
    def from_config(cls, model_cfg: Any) -> Optional[ChatPrompt]:
        """From a ``model`` config node (a training run's, or predict's restored one); None without chat_template."""
        if not model_cfg.get("chat_template"):
            return None
        prompt = model_cfg.get("prompt") or {}
        return cls(prompt.get("system") or None, prompt.get("user"), tuple(model_cfg.get("end_of_turn") or ()))
