"""Run readers and curation stages as a resumable, accounted pipeline of JSONL files.

Layout written under ``out_dir``::

    stages/00_read.jsonl            records after each step (00 = the readers)
    stages/00_read.rejects.jsonl    what that step dropped, with reasons
    stages/00_read.stats.json       its counts (in/out/rejected, per source) and settings
    stages/01_modality.jsonl ...
    stages/02_standardize.answers.jsonl   an LLM stage's journal of received answers (kept)
    curated.jsonl                   the last step's records
    rejects.jsonl                   every step's rejects
    summary.json                    {"stages": [{"stage", "in", "out", "rejected", "by_source"}]}

A step is skipped when its records file exists (files are renamed into place only when
complete) and its recorded settings equal the current ones; once a step re-runs, all later
steps re-run too. Every step must account for its input: ``in == out + rejected``.

An LLM stage (one with a ``journal`` attribute) appends every answer it receives to its
``.answers.jsonl`` (:mod:`.journal`) before using it; a rerun after an outage reads it and sends
only the requests still unanswered. The journal is kept after the step: a rerun of the step
(changed earlier data, say) sends again only requests whose body changed. The step's stats
record ``answers``: how many came from the journal, how many were received, and ignored lines.

    pipeline = Pipeline([ModalityFilter(), RuleStandardizer()], Path("runs/x"))
    summary = pipeline.run([IUXrayReader(bundled_reports_path())])
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..readers.base import Reader
from ..records import CXRRecord, Rejected, RejectSink
from .base import JsonlRecords, Stage, atomic_open, write_json
from .journal import AnswerJournal

Produce = Callable[[RejectSink], Iterable[CXRRecord]]


class AccountingError(RuntimeError):
    """A step's output plus its rejects do not add up to its input."""


class Pipeline:
    """Readers, then ``stages`` in order, each step's output persisted and counted."""

    def __init__(self, stages: Sequence[Stage], out_dir: Path, progress: bool = True) -> None:
        names = [s.name for s in stages]
        if len(set(names)) != len(names) or "read" in names:
            raise ValueError(f"stage names must be unique and not 'read'; got {names}")
        self.stages = list(stages)
        self.out_dir = Path(out_dir)
        self.progress = progress

    def _paths(self, index: int, name: str) -> tuple[Path, Path, Path]:
        base = self.out_dir / "stages" / f"{index:02d}_{name}"
        return (
            base.with_name(base.name + ".jsonl"),
            base.with_name(base.name + ".rejects.jsonl"),
            base.with_name(base.name + ".stats.json"),
        )

    def run(self, readers: Sequence[Reader]) -> dict[str, Any]:
        """Run (or resume) every step; returns and writes the summary."""
        if not readers:
            raise ValueError("Pipeline.run needs at least one reader")
        steps: list[tuple[str, dict[str, Any], Produce | None, Stage | None]] = [
            ("read", {"readers": [r.params() for r in readers]}, _read_all(readers), None)
        ] + [(s.name, s.params(), None, s) for s in self.stages]
        stats: list[dict[str, Any]] = []
        rerun = False
        previous: dict[str, Any] | None = None
        for index, (name, params, produce, stage) in enumerate(steps):
            records_path, rejects_path, stats_path = self._paths(index, name)
            done = _load_stats(stats_path) if records_path.exists() else None
            if not rerun and done is not None and done.get("params") == params:
                stats.append(done)
                previous = done
                continue
            rerun = True
            self._clear_from(index + 1, steps)
            journal = None
            if stage is not None:
                source = JsonlRecords(self._paths(index - 1, steps[index - 1][0])[0])
                produce = _stage_producer(stage, source)
                if hasattr(stage, "journal"):  # an LLM stage: keep every answer it receives
                    journal = stage.journal = AnswerJournal(records_path.with_suffix(".answers.jsonl"))
            assert produce is not None
            expected = previous["out"] if previous else None
            step = self._run_step(name, params, produce, expected, previous, records_path,
                                  rejects_path, stats_path)
            if journal is not None:
                step["answers"] = journal.report()
                write_json(stats_path, step)
            stats.append(step)
            previous = step
        return self._finish(steps, stats)

    def _clear_from(self, start: int, steps: Sequence[tuple[str, Any, Any, Any]]) -> None:
        # A re-run step invalidates everything after it; deleting now means a crash before
        # those steps re-run cannot leave stale outputs that a later resume would trust.
        for j in range(start, len(steps)):
            for path in self._paths(j, steps[j][0]):
                path.unlink(missing_ok=True)

    def _run_step(
        self,
        name: str,
        params: dict[str, Any],
        produce: Produce,
        expected_in: int | None,
        previous: dict[str, Any] | None,
        records_path: Path,
        rejects_path: Path,
        stats_path: Path,
    ) -> dict[str, Any]:
        out_by: Counter[str] = Counter()
        rej_by: Counter[str] = Counter()
        with atomic_open(rejects_path) as rej_f, atomic_open(records_path) as rec_f:

            def sink(rejected: Rejected) -> None:
                rej_by[rejected.source] += 1
                rej_f.write(rejected.to_json() + "\n")

            stream = tqdm(produce(sink), desc=name, total=expected_in, unit="rec",
                          disable=not self.progress, leave=False)
            for record in stream:
                out_by[record.source] += 1
                rec_f.write(record.to_json() + "\n")
        out, rejected = sum(out_by.values()), sum(rej_by.values())
        n_in = out + rejected if expected_in is None else expected_in
        in_by = (
            {s: c["out"] for s, c in previous["by_source"].items()}
            if previous
            else {s: out_by[s] + rej_by[s] for s in out_by | rej_by}
        )
        if n_in != out + rejected:
            records_path.unlink(missing_ok=True)  # not complete: never resume from it
            raise AccountingError(
                f"stage {name!r} took {n_in} records but emitted {out} and rejected {rejected}; "
                "every record must end in the output or the rejects"
            )
        by_source = {
            s: {"in": in_by.get(s, 0), "out": out_by[s], "rejected": rej_by[s]}
            for s in sorted(set(in_by) | set(out_by) | set(rej_by))
        }
        step = {"stage": name, "in": n_in, "out": out, "rejected": rejected,
                "by_source": by_source, "params": params}
        write_json(stats_path, step)
        return step

    def _finish(
        self, steps: Sequence[tuple[str, Any, Any, Any]], stats: list[dict[str, Any]]
    ) -> dict[str, Any]:
        last_records = self._paths(len(steps) - 1, steps[-1][0])[0]
        with atomic_open(self.out_dir / "curated.jsonl") as f, open(last_records) as src:
            shutil.copyfileobj(src, f)
        with atomic_open(self.out_dir / "rejects.jsonl") as f:
            for j, (name, *_rest) in enumerate(steps):
                with open(self._paths(j, name)[1]) as src:
                    shutil.copyfileobj(src, f)
        summary = {
            "stages": [{k: v for k, v in s.items() if k != "params"} for s in stats],
            "curated": str(self.out_dir / "curated.jsonl"),
            "rejects": str(self.out_dir / "rejects.jsonl"),
        }
        write_json(self.out_dir / "summary.json", summary)
        return summary


def _read_all(readers: Sequence[Reader]) -> Produce:
    def produce(reject: RejectSink) -> Iterator[CXRRecord]:
        for reader in readers:
            yield from reader.read(reject)

    return produce


def _stage_producer(stage: Stage, source: JsonlRecords) -> Produce:
    return lambda reject: stage.process(source, reject)


def _load_stats(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
