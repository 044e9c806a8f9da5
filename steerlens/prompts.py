"""Chat formatting, tokenization with left padding, and post-instruction token positions.

A chat prompt is three segments: the *header* (chat template up to the user's text,
including any system prompt), the *instruction*, and the *suffix* (the template after the
user's text, up to the assistant's turn, plus an optional assistant prefill). Each segment
is tokenized on its own and the ids are concatenated, so every prompt of a model shares the
header's ids exactly; that is what makes KV-cache prefix reuse exact. The suffix tokens are
the "end of instruction" (EOI) positions that refusal directions are read at.

System prompt: `system=None` keeps the template's own default (Qwen2.5 inserts "You are
Qwen, created by Alibaba Cloud. You are a helpful assistant."); pass a string to override it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from jaxtyping import Int
from torch import Tensor

from steerlens.errors import SteerlensError

_SENTINEL = "\x00STEERLENS_INSTRUCTION\x00"


@dataclass(frozen=True)
class ChatTemplate:
    """The text around a user instruction, split once per (tokenizer, system prompt)."""

    header: str
    suffix: str

    def format(self, instruction: str, assistant_prefix: str = "") -> str:
        return self.header + instruction + self.suffix + assistant_prefix


def chat_template(tokenizer, system: str | None = None) -> ChatTemplate:
    """Split the tokenizer's chat template around a sentinel user message."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": _SENTINEL})
    if getattr(tokenizer, "chat_template", None) is None:
        raise SteerlensError(
            "this tokenizer has no chat template, so instructions cannot be formatted",
            fix="use an instruction-tuned (chat) model",
        )
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    header, _, suffix = text.partition(_SENTINEL)
    return ChatTemplate(header=header, suffix=suffix)


@dataclass
class PromptBatch:
    """Left-padded token ids with their mask; row i's real tokens are `input_ids[i, -lengths[i]:]`."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    lengths: list[int]
    n_suffix: int  # number of trailing tokens after the instruction (EOI + assistant prefill)

    def to(self, device) -> PromptBatch:
        return PromptBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.lengths, self.n_suffix
        )

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def _ids(tokenizer, text: str) -> list[int]:
    # Chat text carries its own special tokens: never prepend BOS (SmolLM2's BOS is <|im_start|>).
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


@lru_cache(maxsize=64)
def _segment_ids(tokenizer, text: str) -> tuple[int, ...]:
    return tuple(_ids(tokenizer, text))


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Stack ragged id lists into left-padded ids and a 0/1 attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids, mask


def chat_token_rows(
    tokenizer,
    instructions: list[str],
    system: str | None = None,
    assistant_prefix: str = "",
    include_header: bool = True,
) -> tuple[list[list[int]], int]:
    """Token id lists per instruction (header + instruction + suffix segments) and the suffix length."""
    if not instructions:
        raise SteerlensError("empty prompt set: no instructions to tokenize", fix="pass at least one")
    tpl = chat_template(tokenizer, system)
    header = list(_segment_ids(tokenizer, tpl.header)) if include_header else []
    suffix = list(_segment_ids(tokenizer, tpl.suffix + assistant_prefix))
    rows = [header + _ids(tokenizer, ins) + suffix for ins in instructions]
    return rows, len(suffix)


def tokenize_chat(
    tokenizer,
    instructions: list[str],
    system: str | None = None,
    assistant_prefix: str = "",
    include_header: bool = True,
) -> PromptBatch:
    """Format instructions as chat turns and left-pad them into one batch."""
    rows, n_suffix = chat_token_rows(tokenizer, instructions, system, assistant_prefix, include_header)
    ids, mask = left_pad(rows, tokenizer.pad_token_id)
    return PromptBatch(ids, mask, [len(r) for r in rows], n_suffix)


def header_ids(tokenizer, system: str | None = None) -> list[int]:
    """The ids every chat prompt of this tokenizer and system prompt starts with."""
    return list(_segment_ids(tokenizer, chat_template(tokenizer, system).header))


def eoi_positions(n_suffix: int) -> list[int]:
    """Negative indices of the post-instruction tokens (valid for left-padded batches)."""
    return list(range(-n_suffix, 0))
