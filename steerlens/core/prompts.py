"""The one path from chat text to tokens.

Every prompt is a whole chat text: the tokenizer's chat template applied to the conversation
(optional system prompt, the user's message and, where there is one, the start of the
assistant's answer), tokenized in one piece. The model therefore sees exactly the tokens it
would see in use: in Qwen's BPE `(A` is one token and `Request: Write` ends in `ĠWrite`, which
segment-wise tokenization would both get wrong.

Shared prefixes (the chat header, an attack template's head) are derived from the token ids,
as their longest common prefix, never by tokenizing segments apart; the KV-cache sharing
built on them is exact (tests/core/test_kvcache.py).

Steering positions: the *tail* of a row is everything after the user's message (the
end-of-turn and assistant-header tokens, plus any assistant prefill). CAA steers from there
on; so does the audit, under every attack, so the number of steered prompt tokens does not
depend on the template (recorded in runs as `n_tail`).

System prompt: `system=None` keeps the template's own default (Qwen2.5 inserts "You are Qwen,
created by Alibaba Cloud. You are a helpful assistant."); pass a string to override it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from jaxtyping import Int
from torch import Tensor

from steerlens.errors import SteerlensError

_SENTINEL = "\x00STEERLENS_USER\x00"


def token_ids(tokenizer, text: str) -> list[int]:
    """Ids of a whole text. Chat text carries its own special tokens, so no BOS is added
    (SmolLM2's BOS is `<|im_start|>`: it would be doubled)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def pad_id(tokenizer) -> int:
    """The id used for left padding (pad, else EOS); padded positions are masked anyway."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _messages(user: str, system: str | None, assistant: str | None) -> list[dict]:
    msgs = [] if system is None else [{"role": "system", "content": system}]
    msgs.append({"role": "user", "content": user})
    if assistant is not None:
        msgs.append({"role": "assistant", "content": assistant})
    return msgs


def chat_text(tokenizer, user: str, system: str | None = None, assistant: str | None = None) -> str:
    """The full chat text of one conversation, as the model reads it at generation time.

    Without `assistant`, the text ends with the assistant header (the generation prompt);
    with it, it ends with that unfinished assistant message (HF `continue_final_message`).
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise SteerlensError("this tokenizer has no chat template, so prompts cannot be formatted",
                             fix="use an instruction-tuned (chat) model")
    msgs = _messages(user, system, assistant)
    if assistant is None:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return tokenizer.apply_chat_template(msgs, tokenize=False, continue_final_message=True)


def _post_user_text(tokenizer, system: str | None, assistant: str | None) -> str:
    """The template text after the user's message (same for every message of a template)."""
    text = chat_text(tokenizer, _SENTINEL, system, assistant)
    if _SENTINEL not in text:
        raise SteerlensError("the chat template does not reproduce the user's message verbatim",
                             fix="use a chat template that inserts the message unchanged")
    return text[text.rindex(_SENTINEL) + len(_SENTINEL):]


def _tail_start(tokenizer, text: str, ids: list[int], boundary: int) -> int:
    """Index of the first token that starts at or after character `boundary` of `text`."""
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"]
        starts = [s for s, _ in offsets]
        return next((i for i, s in enumerate(starts) if s >= boundary), len(ids))
    # Slow tokenizers have no offsets: count the tokens of the text before the boundary.
    return len(token_ids(tokenizer, text[:boundary]))


def longest_common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of several id lists."""
    first, n = rows[0], min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != first[i] for r in rows):
            return i
    return n


@dataclass(frozen=True)
class PromptSet:
    """Tokenized chat prompts: ids shared by every row, each row's own ids, and its tail.

    Row i's full ids are `prefix + rows[i]`, equal to the tokenization of `texts[i]`. The last
    `n_tail` ids of every row come after the user's message: steering "after the instruction"
    acts there, and refusal directions are read there.
    """

    prefix: list[int]
    rows: list[list[int]]
    n_tail: int
    texts: list[str]

    def __len__(self) -> int:
        return len(self.rows)

    def full(self, i: int) -> list[int]:
        return self.prefix + self.rows[i]

    @cached_property
    def bodies(self) -> list[list[int]]:
        """Each row without its tail: the part no after-instruction steering touches."""
        return [r[: len(r) - self.n_tail] for r in self.rows]

    @cached_property
    def tails(self) -> list[list[int]]:
        return [r[len(r) - self.n_tail:] for r in self.rows]

    def subset(self, index: Sequence[int]) -> PromptSet:
        """The rows at `index` (the shared prefix stays as it is: still common to them)."""
        return PromptSet(self.prefix, [self.rows[i] for i in index], self.n_tail,
                         [self.texts[i] for i in index])

    def tail_positions(self) -> list[int]:
        """Negative indices of the tail (valid for left-padded batches)."""
        return list(range(-self.n_tail, 0))


def from_texts(tokenizer, texts: Sequence[str], tail_starts: Sequence[int] | None = None
               ) -> PromptSet:
    """A `PromptSet` from whole texts: each is tokenized in one piece, the prefix is the
    longest common prefix of the ids (every row keeps at least one id of its own)."""
    if not texts:
        raise SteerlensError("empty prompt set: no prompts to tokenize", fix="pass at least one")
    full = [token_ids(tokenizer, t) for t in texts]
    starts = list(tail_starts) if tail_starts is not None else [len(f) for f in full]
    n_tail = min(len(f) - s for f, s in zip(full, starts))
    cut = min(longest_common_prefix(full), min(len(f) - n_tail for f in full) - 1)
    cut = max(cut, 0)
    return PromptSet(full[0][:cut], [f[cut:] for f in full], n_tail, list(texts))


def _as_list(x, n: int) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x] * n


def chat_prompts(
    tokenizer,
    users: Sequence[str],
    system: str | None = None,
    assistant: str | Sequence[str] | None = None,
) -> PromptSet:
    """Chat prompts for user messages (and optional assistant prefills, one or one per row).

    The tail of each row starts at the first token after the user's message. If a tokenizer
    merged that boundary differently across rows, the shortest tail is used for all rows.
    """
    if not users:
        raise SteerlensError("empty prompt set: no instructions to tokenize", fix="pass at least one")
    prefills = _as_list(assistant, len(users))
    texts, starts = [], []
    post = {a: _post_user_text(tokenizer, system, a) for a in set(prefills)}
    for user, a in zip(users, prefills):
        text = chat_text(tokenizer, user, system, a)
        if not text.endswith(post[a]):
            raise SteerlensError("the chat template renders this message differently from others",
                                 fix="report the model's chat template to steerlens")
        ids = token_ids(tokenizer, text)
        texts.append(text)
        starts.append(_tail_start(tokenizer, text, ids, len(text) - len(post[a])))
    return from_texts(tokenizer, texts, starts)


def left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[Tensor, Tensor]:
    """Stack ragged id lists into left-padded ids and a 0/1 attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


@dataclass
class Batch:
    """Left-padded token ids with their mask (row i's real tokens are the last `lengths[i]`)."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]

    def to(self, device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device))


def full_batch(prompts: PromptSet, tokenizer) -> Batch:
    """Every row with the prefix put back, left-padded: the plain path, for references."""
    ids, mask = left_pad([prompts.full(i) for i in range(len(prompts))], pad_id(tokenizer))
    return Batch(ids, mask)


def length_batches(rows: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar length (sorted by length, stable), so batches carry
    little padding; shared by activation collection and generation."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
