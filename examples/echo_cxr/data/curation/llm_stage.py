"""What the two LLM-backed stages share: prompt templates and ordered concurrent calls.

Prompts live in ``prompts/<name>.txt``: the system message, a line ``---``, then the user
message with the placeholder ``<<REPORT>>`` (not ``{report}``: the prompts contain JSON braces).
Concurrency matters against a real vLLM server, which batches concurrent requests; results
come back in input order so a stage stays deterministic.

An answer that fails validation, or a request the server refused as such (HTTP 400/413/422),
rejects the record. Any other failure (outage, reset, timeout, 5xx, auth, redirect) is the
endpoint's, not the record's: :func:`reject_reason` raises :class:`EndpointFailure`, the stage
stops, and no record of that step is saved as a reject. The answers already received are kept:
:class:`~.runner.Pipeline` gives each LLM stage an :class:`~.journal.AnswerJournal`
(``stages/NN_<name>.answers.jsonl``), so the rerun sends only the requests still unanswered.

    system, user = load_prompt("standardize")
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ..llm_client import ChatClient, InvalidAnswer, LLMError
from .journal import AnswerJournal

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
PLACEHOLDER = "<<REPORT>>"

T = TypeVar("T")
R = TypeVar("R")


class EndpointFailure(LLMError):
    """The LLM endpoint failed (not the record): the stage stops so no record becomes a reject."""


def reject_reason(stage: str, key: str, what: str, err: LLMError | InvalidAnswer) -> str:
    """The reject reason for a failure of this record, or raise :class:`EndpointFailure`."""
    if isinstance(err, InvalidAnswer) or err.record_specific:
        return f"{what} failed: {err}"
    raise EndpointFailure(
        f"stage {stage!r} stopped at record {key}: {err}. An endpoint failure is not a property "
        "of the record: nothing of this step was saved as a reject; rerun to retry"
    ) from err


def ask(client: ChatClient, messages: list[dict[str, str]], journal: AnswerJournal | None) -> str:
    """``client.chat(messages)``, through ``journal`` when the stage has one."""
    return client.chat(messages) if journal is None else journal.ask(client, messages)


def load_prompt(name_or_path: str | Path) -> tuple[str, str]:
    """``(system, user template)`` from a shipped prompt name or a path to a prompt file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROMPT_DIR / f"{name_or_path}.txt"
    if not path.is_file():
        shipped = sorted(p.stem for p in PROMPT_DIR.glob("*.txt"))
        raise FileNotFoundError(f"prompt {name_or_path!r} not found at {path}; shipped: {shipped}")
    text = path.read_text(encoding="utf-8")
    system, sep, user = text.partition("\n---\n")
    if not sep or PLACEHOLDER not in user:
        raise ValueError(
            f"prompt {path} must be '<system>\\n---\\n<user>' with {PLACEHOLDER} in the user part"
        )
    return system.strip(), user.strip()


def render(template: str, report: str) -> str:
    """The user message for one report."""
    return template.replace(PLACEHOLDER, report)


def map_ordered(fn: Callable[[T], R], items: Iterable[T], concurrency: int) -> Iterator[tuple[T, R]]:
    """Yield ``(item, fn(item))`` in input order, running up to ``concurrency`` calls at once.

    At most ``2 * concurrency`` items are in flight, so a long stream is never read ahead.
    ``fn`` must not raise (stages turn failures into rejects inside ``fn``).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency}; expected >= 1")
    if concurrency == 1:
        for item in items:
            yield item, fn(item)
        return
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        window: deque[tuple[T, Future[R]]] = deque()
        for item in items:
            window.append((item, pool.submit(fn, item)))
            if len(window) >= 2 * concurrency:
                head, future = window.popleft()
                yield head, future.result()
        while window:
            head, future = window.popleft()
            yield head, future.result()
