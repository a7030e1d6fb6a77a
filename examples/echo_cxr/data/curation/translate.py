"""Stage 4: make the corpus bilingual by translating a seeded random half into Chinese.

Following the paper ("translating a random 50% of reports into Chinese"), a selected study's
Chinese report *replaces* its English one (``language="zh"``, key ``source/study#zh``); the
corpus size does not change. Selection is a seeded hash of each record's key, so it does not
depend on stream order or on which other records survived earlier stages (each study is
chosen independently with probability ``fraction``: about, not exactly, half).

An answer that is not ``{"findings", "impression"}`` JSON containing Chinese text rejects the
study, so no untranslated English copy hides among the ``zh`` records. A failing endpoint
stops the stage instead (nothing saved; a rerun retries).

    stage = BilingualAugment(ChatClient("http://127.0.0.1:8000", "baichuan-inc/Baichuan-M2-32B"))
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..llm_client import ChatClient, InvalidAnswer, LLMError, parse_report_json
from ..records import CXRRecord, Rejected, RejectSink
from .journal import AnswerJournal
from .llm_stage import ask, load_prompt, map_ordered, reject_reason, render

_CJK = re.compile(r"[\u4e00-\u9fff]")


def selected(key: str, seed: int, fraction: float) -> bool:
    """Whether the study ``key`` is translated: a seeded hash in [0, 1) below ``fraction``."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


@dataclass
class BilingualAugment:
    """Replace a seeded ``fraction`` of English reports by their Chinese translation."""

    client: ChatClient
    fraction: float = 0.5
    seed: int = 0
    prompt: str | Path = "translate"
    concurrency: int = 1
    name: str = "translate"
    journal: AnswerJournal | None = field(default=None, repr=False, compare=False)
    """Answers already received (set by :class:`~.runner.Pipeline`); ``None``: ask every time."""
    _system: str = field(default="", init=False, repr=False)
    _user: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction={self.fraction}; expected a probability in [0, 1]")
        self._system, self._user = load_prompt(self.prompt)

    def params(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "seed": self.seed, "client": self.client.params(),
                "system": self._system, "user": self._user}

    def _translate(self, record: CXRRecord) -> dict[str, str] | str | None:
        """``None`` when not selected, the Chinese sections, or a failure reason."""
        if record.language != "en" or not selected(record.key, self.seed, self.fraction):
            return None
        source = json.dumps({"findings": record.findings, "impression": record.impression},
                            ensure_ascii=False)
        messages = [{"role": "system", "content": self._system},
                    {"role": "user", "content": render(self._user, source)}]
        try:
            answer = parse_report_json(ask(self.client, messages, self.journal))
        except (LLMError, InvalidAnswer) as err:
            return reject_reason(self.name, record.key, "translation", err)
        for part in ("findings", "impression"):
            if getattr(record, part).strip() and not _CJK.search(answer[part]):
                return f"translation failed: {part} has no Chinese characters: {answer[part][:60]!r}"
        return answer

    def process(self, records: Iterable[CXRRecord], reject: RejectSink) -> Iterator[CXRRecord]:
        """Yield English records unchanged and selected ones as their Chinese replacement."""
        for record, result in map_ordered(self._translate, records, self.concurrency):
            if result is None:
                yield record
            elif isinstance(result, str):
                reject(Rejected.of(record, self.name, result))
            else:
                metadata = {**record.metadata, "translated_from": "en"}
                yield replace(record, findings=result["findings"], impression=result["impression"],
                              language="zh", metadata=metadata)
