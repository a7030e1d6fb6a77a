"""The chat-completions client and the LLM stages against a real loopback HTTP server.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python -m pytest tests/echo_cxr/test_data_llm_client.py -q
"""

from __future__ import annotations

import json
import time

import pytest

from examples.echo_cxr.data.curation import BilingualAugment, LLMStandardizer
from examples.echo_cxr.data.curation.llm_stage import EndpointFailure
from examples.echo_cxr.data.curation.translate import selected
from examples.echo_cxr.data.llm_client import (
    ChatClient,
    InvalidAnswer,
    LLMError,
    parse_report_json,
)
from examples.echo_cxr.data.records import CXRRecord
from tests.echo_cxr.fixtures.chat_server import ChatServer, Reply, scripted

GOOD = json.dumps({"findings": "No pleural effusion.", "impression": "Normal chest."})
ZH = json.dumps({"findings": "无胸腔积液。", "impression": "胸部未见异常。"}, ensure_ascii=False)
MSG = [{"role": "user", "content": "hi"}]


def client(url: str, **kw) -> ChatClient:
    kw = {"timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.0, **kw}
    return ChatClient(url, model="test-model", **kw)


def test_valid_answer_roundtrip() -> None:
    """Guards against a wrong route or body: the server must see our model and messages."""
    with ChatServer(scripted([Reply(content=GOOD)])) as srv:
        answer = parse_report_json(client(srv.url + "/v1").chat(MSG))
    assert answer == {"findings": "No pleural effusion.", "impression": "Normal chest."}
    assert srv.requests[0]["model"] == "test-model" and srv.requests[0]["messages"] == MSG


def test_malformed_json_answer_is_rejected_with_reason() -> None:
    """Guards against prose-wrapped or extra-key answers leaking into the corpus."""
    with ChatServer(scripted([Reply(content="Sure! Here is the JSON: {")])) as srv:
        text = client(srv.url).chat(MSG)
        stage = LLMStandardizer(client(srv.url))
        rejects: list = []
        out = list(stage.process([CXRRecord("s1", "mimic_cxr", findings="Lungs clear.")],
                                 rejects.append))
    with pytest.raises(InvalidAnswer, match="not valid JSON"):
        parse_report_json(text)
    assert out == [] and len(rejects) == 1
    assert rejects[0].stage == "standardize" and "not valid JSON" in rejects[0].reason
    assert len(srv.requests) == 2, "an invalid answer must not be retried"


@pytest.mark.parametrize("answer,why", [
    ('{"findings": "x", "impression": "y", "notes": "z"}', "expected exactly"),
    ('{"findings": "x"}', "expected exactly"),
    ('{"findings": 1, "impression": "y"}', "expected a string"),
    ('["findings", "impression"]', "expected an object"),
])
def test_strict_schema(answer: str, why: str) -> None:
    with pytest.raises(InvalidAnswer, match=why):
        parse_report_json(answer)


def test_tolerated_wrappers() -> None:
    """A reasoning block and a code fence are protocol noise, not content."""
    wrapped = f"<think>negatives first</think>\n```json\n{GOOD}\n```"
    assert parse_report_json(wrapped)["impression"] == "Normal chest."


def test_timeout_then_successful_retry() -> None:
    """Guards against a hung server stalling the pipeline: time out, retry, succeed.

    The slow first reply carries a different answer: getting the second one proves the client
    gave up on the first (no wall-time bound, which a loaded machine would make flaky).
    """
    slow = json.dumps({"findings": "Slow.", "impression": "Too late."})
    with ChatServer(scripted([Reply(content=slow, delay_s=3.0), Reply(content=GOOD)])) as srv:
        text = client(srv.url, timeout_s=0.3).chat(MSG)
    assert parse_report_json(text)["findings"] == "No pleural effusion."
    assert len(srv.requests) == 2


def test_server_error_retried_then_reported() -> None:
    """A persistent 500 ends as LLMError naming the status and the attempts; the stage stops.

    A failing endpoint is not a property of the record: no reject is reported (a rerun retries).
    """
    with ChatServer(scripted([Reply(status=500)])) as srv:
        with pytest.raises(LLMError, match=r"HTTP 500.*after 3 attempts"):
            client(srv.url).chat(MSG)
        assert len(srv.requests) == 3
        rejects: list = []
        with pytest.raises(EndpointFailure, match=r"rexgradient/s2.*HTTP 500"):
            list(LLMStandardizer(client(srv.url, max_retries=0)).process(
                [CXRRecord("s2", "rexgradient", impression="Effusion.")], rejects.append))
    assert rejects == []


def test_server_error_then_recovery() -> None:
    with ChatServer(scripted([Reply(status=503), Reply(content=GOOD)])) as srv:
        assert parse_report_json(client(srv.url).chat(MSG))["impression"] == "Normal chest."


def test_client_error_not_retried() -> None:
    with ChatServer(scripted([Reply(status=400)])) as srv:
        with pytest.raises(LLMError, match="HTTP 400"):
            client(srv.url).chat(MSG)
        assert len(srv.requests) == 1


def test_broken_protocol_body() -> None:
    with ChatServer(scripted([Reply(raw_body=b"<html>gateway</html>")])) as srv:
        with pytest.raises(LLMError, match="chat-completions format"):
            client(srv.url).chat(MSG)


def test_rate_limit_spaces_requests() -> None:
    with ChatServer(scripted([Reply(content=GOOD)])) as srv:
        c = client(srv.url, requests_per_s=20.0)
        start = time.monotonic()
        for _ in range(5):
            c.chat(MSG)
        assert time.monotonic() - start >= 0.19  # 4 gaps of 50 ms (a lower bound: load only adds)


def test_concurrent_stage_keeps_input_order() -> None:
    """Guards against concurrency reordering records (results must follow the input)."""
    def echo(body: dict, i: int) -> Reply:
        report = body["messages"][-1]["content"].rsplit("IMPRESSION: ", 1)[-1]
        return Reply(content=json.dumps({"findings": "x", "impression": report}),
                     delay_s=0.05 * (i % 3))

    records = [CXRRecord(f"s{i}", "mimic_cxr", impression=f"Finding {i}.") for i in range(12)]
    with ChatServer(echo) as srv:
        out = list(LLMStandardizer(client(srv.url), concurrency=4).process(records, print))
    assert [r.impression for r in out] == [f"Finding {i}." for i in range(12)]


def test_translation_replaces_a_seeded_half() -> None:
    """The paper replaces (does not add) the translated half; selection is seeded and stable."""
    records = [CXRRecord(f"s{i}", "mimic_cxr", findings="No effusion.", impression="Normal.")
               for i in range(200)]
    with ChatServer(scripted([Reply(content=ZH)])) as srv:
        stage = BilingualAugment(client(srv.url), seed=7)
        rejects: list = []
        out = list(stage.process(records, rejects.append))
    zh = [r for r in out if r.language == "zh"]
    assert len(out) == 200 and not rejects
    assert 70 <= len(zh) <= 130
    assert {r.key for r in zh} == {f"mimic_cxr/s{i}#zh" for i in range(200)
                                   if selected(f"mimic_cxr/s{i}", 7, 0.5)}
    assert zh[0].findings == "无胸腔积液。" and zh[0].metadata["translated_from"] == "en"
    assert len(srv.requests) == len(zh)


def test_translation_without_chinese_is_rejected() -> None:
    record = CXRRecord("s1", "mimic_cxr", findings="No effusion.", impression="Normal.")
    with ChatServer(scripted([Reply(content=GOOD)])) as srv:
        rejects: list = []
        out = list(BilingualAugment(client(srv.url), fraction=1.0).process([record], rejects.append))
    assert out == [] and "no Chinese characters" in rejects[0].reason
