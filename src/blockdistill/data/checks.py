"""Every training example checked before training starts, each bad one named by its record.

A bad example (empty prompt or response, an id outside the vocabulary, a stream longer than
``data.max_length`` or, without it, the backbone's context) used to surface at the first batch
that drew it, as "example 3" of a shuffled batch, or deep inside a forward. :func:`check_examples`
runs over the whole data set first and names the record (``train.jsonl:17``, a study id)::

    check_examples(rows, names, block_size=4, vocab_size=32001, max_length=None, context=2048)
    # BadExampleError: train.jsonl:17: token id 40000 in the response is outside the model's
    # vocabulary [0, 32001) (and 2 more bad examples: train.jsonl:30, train.jsonl:31)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

from blockdistill.layout import clean_length

__all__ = ["BadExampleError", "check_examples", "example_problem", "jsonl_objects", "record_name"]


class BadExampleError(ValueError):
    """Training data holds an example no stage can train on; the message names the record."""


def jsonl_objects(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of the JSONL file at ``path``, 1-based.
    A line that is not UTF-8, not JSON or not a JSON object raises :class:`BadExampleError`
    naming ``path:line`` (and the bad byte's column)."""
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise BadExampleError(f"{path}:{i}: not valid UTF-8 (byte {raw[e.start:e.start + 1]!r} at "
                                      f"column {e.start + 1})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadExampleError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise BadExampleError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
            yield i, row


def record_name(example: Any, index: int) -> str:
    """How an example is named in errors: its ``record`` / ``study_id`` / ``id``, else its index."""
    if isinstance(example, dict):
        for key in ("record", "study_id", "id"):
            if example.get(key) not in (None, ""):
                return str(example[key])
    return f"example {index}"


def _ids_problem(ids: Any, part: str, vocab_size: int | None) -> str | None:
    values = ids.reshape(-1).tolist() if hasattr(ids, "reshape") else ids
    if not isinstance(values, (list, tuple)):
        return f"{part}_ids must be a list of token ids, got {type(values).__name__}"
    if not values:
        return f"empty {part}" + ("; every response needs at least one token" if part == "response" else "")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"{part}_ids holds {v!r}, not an integer token id"
        if v < 0 or (vocab_size is not None and v >= vocab_size):
            bound = f"[0, {vocab_size})" if vocab_size is not None else ">= 0"
            return f"token id {v} in the {part} is outside the model's vocabulary {bound}"
    return None


def example_problem(example: dict[str, Any], *, block_size: int, vocab_size: int | None = None,
                    max_length: int | None = None, context: int | None = None) -> str | None:
    """Why ``example`` cannot be trained on (None: it can). ``max_length`` wins over ``context``."""
    for part in ("prompt", "response"):
        problem = _ids_problem(example.get(f"{part}_ids"), part, vocab_size)
        if problem:
            return problem
    p, r = len(example["prompt_ids"]), len(example["response_ids"])
    n = int(clean_length(p, r, block_size))
    limit, what = (max_length, "data.max_length") if max_length is not None else (context, "the backbone's context")
    if limit is not None and n > limit:
        return (f"{n} tokens (prompt {p} + response {r} + EOS, padded to whole blocks of {block_size}) "
                f"exceed {what} ({limit})")
    return None


def check_examples(examples: Sequence[dict[str, Any]], names: Sequence[str] | None = None, *, block_size: int,
                   vocab_size: int | None = None, max_length: int | None = None, context: int | None = None) -> None:
    """Raise :class:`BadExampleError` naming the first bad example (and counting the rest)."""
    bad: list[tuple[str, str]] = []
    for i, example in enumerate(examples):
        problem = example_problem(example, block_size=block_size, vocab_size=vocab_size,
                                  max_length=max_length, context=context)
        if problem:
            bad.append((names[i] if names is not None else record_name(example, i), problem))
    if bad:
        more = ""
        if len(bad) > 1:
            listed = ", ".join(name for name, _ in bad[1:6]) + (", ..." if len(bad) > 6 else "")
            more = f" (and {len(bad) - 1} more bad examples: {listed})"
        raise BadExampleError(f"{bad[0][0]}: {bad[0][1]}{more}")
