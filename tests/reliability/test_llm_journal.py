"""An LLM stage stopped by an outage keeps the answers it already received (issue 19, point 4).

A real HTTP server on 127.0.0.1 answers the first k requests of the standardisation step and
then fails (HTTP 500) until the stage stops. Rerunning against a working server must send that
server exactly the requests still unanswered, counted server-side, and give the same curated
records as a run that never saw the outage. The journal's last line is then cut short on disk,
as a kill mid-write leaves it: the rerun ignores and reports that line and asks for its answer.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python -m pytest tests/reliability/test_llm_journal.py -q
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from examples.echo_cxr.data.curation import LLMStandardizer, ModalityFilter, Pipeline
from examples.echo_cxr.data.curation.journal import AnswerJournal, request_key
from examples.echo_cxr.data.curation.llm_stage import EndpointFailure
from examples.echo_cxr.data.llm_client import ChatClient
from examples.echo_cxr.data.readers import MimicCXRReader
from tests.echo_cxr.fixtures.chat_server import ChatServer, Reply

FIX = Path(__file__).resolve().parents[1] / "echo_cxr" / "fixtures"
READERS = [MimicCXRReader(FIX / "mimic_cxr")]


def answer(body: dict, i: int) -> Reply:
    """A deterministic answer of the request's content (not of its arrival order)."""
    tag = hashlib.sha256(body["messages"][-1]["content"].encode()).hexdigest()[:8]
    return Reply(content=json.dumps({"findings": f"Clear lungs ({tag}).", "impression": f"Report {tag}."}))


class FailAfter:
    """Answer the first ``k`` requests, then HTTP 500 for every one after (an outage)."""

    def __init__(self, k: int) -> None:
        self.k, self.answered, self.lock = k, [], threading.Lock()

    def __call__(self, body: dict, i: int) -> Reply:
        with self.lock:
            if len(self.answered) >= self.k:
                return Reply(status=500)
            self.answered.append(body)
        return answer(body, i)


def pipeline(url: str, out: Path, concurrency: int = 2, **client) -> Pipeline:
    llm = ChatClient(url, model="m", max_retries=1, backoff_s=0.0, **client)
    return Pipeline([ModalityFilter(), LLMStandardizer(llm, concurrency=concurrency)], out, progress=False)


def journal_of(out: Path) -> Path:
    return out / "stages" / "02_standardize.answers.jsonl"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[str, list[dict]]:
    """An uninterrupted run: its curated records and every request the server received."""
    out = tmp_path_factory.mktemp("reference")
    with ChatServer(answer) as srv:
        pipeline(srv.url, out).run(READERS)
    return (out / "curated.jsonl").read_text(), list(srv.requests)


def keys(bodies: list[dict]) -> list[str]:
    return sorted(request_key(b) for b in bodies)


def test_a_rerun_after_an_outage_sends_only_the_unanswered_requests(tmp_path, reference) -> None:
    curated, requests = reference
    n, k = len(requests), 2
    assert n >= 4
    outage = FailAfter(k)
    with ChatServer(outage) as failing, pytest.raises(EndpointFailure, match="HTTP 500"):
        pipeline(failing.url, tmp_path).run(READERS)
    lines = journal_of(tmp_path).read_text().splitlines()
    assert len(lines) == k and sorted(json.loads(x)["key"] for x in lines) == keys(outage.answered)
    assert not (tmp_path / "rejects.jsonl").exists()

    with ChatServer(answer) as working:
        summary = pipeline(working.url, tmp_path).run(READERS)
    assert len(working.requests) == n - k, "the server received exactly the missing requests"
    assert keys(working.requests) == sorted(set(keys(requests)) - set(keys(outage.answered)))
    assert (tmp_path / "curated.jsonl").read_text() == curated  # = the uninterrupted run
    step = {s["stage"]: s for s in summary["stages"]}["standardize"]
    assert (step["answers"]["reused"], step["answers"]["received"], step["answers"]["ignored_lines"]) == (k, n - k, [])
    assert len(journal_of(tmp_path).read_text().splitlines()) == n


def test_a_journal_line_cut_short_by_a_kill_is_ignored_reported_and_asked_again(tmp_path, reference, caplog) -> None:
    curated, requests = reference
    n, k = len(requests), 3
    outage = FailAfter(k)
    with ChatServer(outage) as failing, pytest.raises(EndpointFailure):
        pipeline(failing.url, tmp_path, concurrency=1).run(READERS)
    path = journal_of(tmp_path)
    data = path.read_bytes()
    last = data[:-1].rfind(b"\n") + 1
    os.truncate(path, last + (len(data) - last) // 2)  # the last write stopped halfway
    torn_key = json.loads(data[last:])["key"]

    with ChatServer(answer) as working:
        summary = pipeline(working.url, tmp_path, concurrency=1).run(READERS)
    assert len(working.requests) == n - k + 1
    assert torn_key in keys(working.requests)
    assert (tmp_path / "curated.jsonl").read_text() == curated
    ignored = {s["stage"]: s for s in summary["stages"]}["standardize"]["answers"]["ignored_lines"]
    assert [x["line"] for x in ignored] == [k] and "cut short" in ignored[0]["reason"]
    assert f"{path}:{k} ignored" in caplog.text
    entries = [json.loads(line) for line in path.read_text().splitlines()]  # clean again: n whole lines
    assert len(entries) == n and sorted(e["key"] for e in entries) == keys(requests)


def test_a_changed_setting_is_a_different_request(tmp_path, reference) -> None:
    """The key covers the settings: a journal of ``max_tokens=2048`` answers none of 1024's."""
    _, requests = reference
    with ChatServer(answer) as srv:
        pipeline(srv.url, tmp_path).run(READERS)
    with ChatServer(answer) as srv:
        pipeline(srv.url, tmp_path, max_tokens=1024).run(READERS)
    assert len(srv.requests) == len(requests) and all(b["max_tokens"] == 1024 for b in srv.requests)
    assert len(AnswerJournal(journal_of(tmp_path)).answers) == 2 * len(requests)
