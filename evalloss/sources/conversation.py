"""Chat and instruction records -> token ids and labels, as TRL's ``SFTTrainer`` (1.x)
tokenizes them, a chunk at a time.

- a conversation (``messages``): rendered with the chat template (`template`), tokenized
  without special tokens (the template writes them), as ``apply_chat_template`` does; under
  ``assistant`` the tokens that overlap a ``{% generation %}`` span are scored (transformers'
  assistant mask, `assistant_mask`);
- a prompt-completion pair of strings: the completion gets the tokenizer's EOS when it does not
  end with it; the model is given ``tokenizer(prompt + completion)`` (special tokens as the
  post-processor adds them); under ``completion`` the tokens past the longest common prefix of
  ``tokenizer(prompt)`` and that sequence are scored;
- a pair of message lists: ``prompt + completion`` rendered, the prompt alone rendered with the
  generation prompt; scored past their common prefix.

Labels are token-aligned (``labels[j]`` is token j, or -100: not scored), as `windows` takes
them. Each record's bytes are the UTF-8 bytes of its scored text: the assistant contents, the
completion (as written), or under ``all`` the whole text given to the tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError
from evalloss.sources.jsonlines import written
from evalloss.sources.template import ChatTemplate, RenderError
from evalloss.sources.tokenizer import encode, encodings

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

IGNORE = -100
Bad = Callable[[int, str, str], DataError]  # (index in the chunk, why, column) -> the error
Converted = tuple[list["npt.NDArray[np.int64]"], list["npt.NDArray[np.int64]"] | None,
                  list[int]]  # fmt: skip


@dataclass(frozen=True)
class Reading:
    """How a chunk is tokenized and scored: the loaded tokenizer (its path and the data's, for
    errors), the template, the EOS a completion ends with, the resolved ``--score``."""

    tokenizer: Any
    tokenizer_path: str
    data: str
    template: ChatTemplate | None
    eos: str | None
    score: str  # assistant, completion or all


def conversations(reading: Reading, records: list[dict[str, Any]], first: int,
                  bad: Bad) -> Converted:  # fmt: skip
    """A chunk of ``messages`` records (the first is row ``first``)."""
    import numpy as np

    assistant = reading.score == "assistant"
    texts, spans, sizes = [], [], []
    for i, record in enumerate(records):
        messages = _messages(record.get("messages"), i, "messages", bad)
        if assistant and not any(m["role"] == "assistant" for m in messages):
            raise bad(i, "no assistant turn: nothing to score (--score all scores every token)",
                      "messages")  # fmt: skip
        text, found = _render(reading, messages, i, "messages", bad)
        texts.append(text)
        spans.append(found)
        sizes.append(_content_bytes(messages, "assistant") if assistant else _bytes(text))
    encoded = encodings(reading.tokenizer, texts, reading.tokenizer_path, reading.data, first,
                        special=False, offsets=assistant)  # fmt: skip
    ids = [np.asarray(e.ids, dtype=np.int64) for e in encoded]
    if not assistant:
        return ids, None, sizes
    labels = []
    for i, (e, tokens) in enumerate(zip(encoded, ids, strict=True)):
        mask = assistant_mask(e.offsets, spans[i])
        if not mask[1:].any():
            raise bad(i, "the chat template marks none of this conversation's tokens as the "
                      "assistant's (past the first token)", "messages")  # fmt: skip
        labels.append(np.where(mask, tokens, IGNORE))
    return ids, labels, sizes


def pairs(reading: Reading, records: list[dict[str, Any]], first: int, bad: Bad,
          conversational: bool) -> Converted:  # fmt: skip
    """A chunk of ``prompt``/``completion`` records: strings, or (``conversational``) lists
    of messages."""

    prompts, wholes, sizes = [], [], []
    scored = reading.score == "completion"
    for i, record in enumerate(records):
        prompt, completion = record.get("prompt"), record.get("completion")
        if conversational:
            asked = _messages(prompt, i, "prompt", bad)
            answered = _messages(completion, i, "completion", bad)
            prompts.append(_render(reading, asked, i, "prompt", bad, generation_prompt=True)[0])
            wholes.append(_render(reading, asked + answered, i, "completion", bad)[0])
            sizes.append(_content_bytes(answered) if scored else _bytes(wholes[-1]))
            continue
        for name, value in (("prompt", prompt), ("completion", completion)):
            if not isinstance(value, str):
                raise bad(i, f"{name} must be a string (as in the first record), not "
                          f"{written(value)}", name)  # fmt: skip
        assert isinstance(prompt, str) and isinstance(completion, str)  # checked just above
        eos = reading.eos or ""
        prompts.append(prompt)
        wholes.append(prompt + (completion if completion.endswith(eos) else completion + eos))
        sizes.append(_bytes(completion) if scored else _bytes(prompt + completion))
    special = not conversational  # a template writes its own special tokens
    ids = encode(reading.tokenizer, wholes, reading.tokenizer_path, reading.data, first,
                 special=special)  # fmt: skip
    if not scored:
        return ids, None, sizes
    asked_ids = encode(reading.tokenizer, prompts, reading.tokenizer_path, reading.data, first,
                       special=special)  # fmt: skip
    labels = []
    for tokens, prompt_ids in zip(ids, asked_ids, strict=True):
        masked = tokens.copy()
        masked[: common_prefix(prompt_ids, tokens)] = IGNORE
        labels.append(masked)
    return ids, labels, sizes


def common_prefix(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> int:
    """How many leading tokens ``a`` and ``b`` share (TRL's ``common_prefix_length``)."""
    import numpy as np

    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


def assistant_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]
                   ) -> npt.NDArray[np.bool_]:  # fmt: skip
    """transformers' assistant mask: a token is the assistant's when it overlaps a span (its
    one pass over tokens and spans, both in order)."""
    import numpy as np

    mask = np.zeros(len(offsets), dtype=bool)
    index = 0
    for token, (start, end) in enumerate(offsets):
        while index < len(spans) and start >= spans[index][1]:
            index += 1
        if index == len(spans):
            break
        if end > spans[index][0]:
            mask[token] = True
    return mask


def _render(reading: Reading, messages: list[dict[str, Any]], i: int, column: str, bad: Bad,
            *, generation_prompt: bool = False) -> tuple[str, list[tuple[int, int]]]:  # fmt: skip
    template = reading.template
    assert template is not None  # open_source found it
    try:
        return template.render(messages, add_generation_prompt=generation_prompt)
    except RenderError as exc:
        raise bad(i, f"{exc} (the template in {template.path})", column) from None


def _messages(value: Any, i: int, column: str, bad: Bad) -> list[dict[str, Any]]:
    """A record's messages: a non-empty list of objects with a string role and content."""
    if not isinstance(value, list) or not value:
        raise bad(i, "must be a non-empty list of {\"role\", \"content\"} messages, not "
                  f"{written(value)}", column)  # fmt: skip
    for k, message in enumerate(value):
        if not isinstance(message, dict):
            raise bad(i, f"message {k} is {written(message)}, not an object", column)
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise bad(i, f"message {k}: {key} must be a string, not "
                          f"{written(message.get(key))}", column)  # fmt: skip
    return value


def _content_bytes(messages: list[dict[str, Any]], role: str | None = None) -> int:
    return sum(_bytes(m["content"]) for m in messages if role is None or m["role"] == role)


def _bytes(text: str) -> int:
    return len(text.encode("utf-8"))
