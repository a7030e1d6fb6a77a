"""An append-only journal of the answers an LLM stage received, so an outage loses none.

One JSON line per answer, ``{"key": <sha256 of the request>, "answer": <message text>}``,
appended with one ``write`` and ``fsync``'d before the answer is used. The key hashes the whole
request body the client sends (model, messages, temperature, ``max_tokens``, response format):
a changed prompt or setting is a different request and is sent again. A rerun of a stage that
an outage stopped reads the journal and sends only the requests that have no answer there.

A line cut short by a kill (the last one, no newline or not JSON) is ignored, reported and
cut off the file, so the next append starts a clean line; it is never fatal. Any other line
that does not parse is ignored and reported too (its request is simply sent again).

    journal = AnswerJournal(Path("runs/x/stages/02_standardize.answers.jsonl"))
    answer = journal.ask(client, messages)   # from the journal, or from the server (then recorded)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def request_key(body: dict[str, Any]) -> str:
    """sha256 of the request body as canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class AnswerJournal:
    """The answers of one stage, read from ``path`` at construction and appended to. Thread-safe.

    Attributes after loading: ``ignored`` (``(line number, reason)`` of every line not used),
    and the counts ``reused`` / ``received`` of answers served from the journal / recorded.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.answers: dict[str, str] = {}
        self.ignored: list[tuple[int, str]] = []
        self.reused = 0
        self.received = 0
        self._lock = threading.Lock()
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        torn = lines.pop()  # bytes after the last newline: b"" unless a write was cut short
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line.decode("utf-8"))
                key, answer = entry["key"], entry["answer"]
                if not isinstance(key, str) or not isinstance(answer, str):
                    raise TypeError("key and answer must be strings")
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
                self._ignore(number, f"not a journal entry ({type(err).__name__}: {err})")
                continue
            self.answers[key] = answer
        if torn:
            self._ignore(len(lines) + 1, f"cut short ({len(torn)} bytes, no newline): a write interrupted by a kill")
            with open(self.path, "r+b") as f:  # drop it, so the next append starts a clean line
                f.truncate(len(data) - len(torn))
                os.fsync(f.fileno())

    def _ignore(self, number: int, reason: str) -> None:
        self.ignored.append((number, reason))
        log.warning("%s:%d ignored, %s; its request will be sent again", self.path, number, reason)

    def get(self, key: str) -> str | None:
        with self._lock:
            answer = self.answers.get(key)
            if answer is not None:
                self.reused += 1
            return answer

    def record(self, key: str, answer: str) -> None:
        """Append one answer durably (one ``write`` of the whole line, then ``fsync``)."""
        line = (json.dumps({"key": key, "answer": answer}, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.answers[key] = answer
            self.received += 1

    def ask(self, client: Any, messages: list[dict[str, str]]) -> str:
        """The answer to ``messages`` from the journal, else from ``client.chat`` (recorded first)."""
        key = request_key(client.request_body(messages))
        answer = self.get(key)
        if answer is None:
            answer = client.chat(messages)  # an LLMError propagates: nothing is recorded
            self.record(key, answer)
        return answer

    def report(self) -> dict[str, Any]:
        """What the step's stats record: reused and received answers, ignored lines."""
        return {"path": str(self.path), "reused": self.reused, "received": self.received,
                "ignored_lines": [{"line": n, "reason": r} for n, r in self.ignored]}
