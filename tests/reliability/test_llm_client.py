"""The LLM curation client against real misbehaving servers on 127.0.0.1 (issue 19, point 4).

Each server is a plain listening socket in a thread that reads the request and then breaks the
protocol on purpose: a redirect to another port, a non-UTF-8 body, a body shorter than its
Content-Length, a malformed status line, a reset (SO_LINGER 0), a trickle of one byte per 0.2 s,
a body over the cap. Every failure must come back as the client's own ``LLMError`` naming the
endpoint and the cause, never the API key; an outage must not turn records into saved rejects.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python -m pytest tests/reliability/test_llm_client.py -q
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from examples.echo_cxr.data.curation import LLMStandardizer, ModalityFilter, Pipeline
from examples.echo_cxr.data.curation.llm_stage import EndpointFailure
from examples.echo_cxr.data.llm_client import ChatClient, LLMError, parse_report_json
from examples.echo_cxr.data.readers import MimicCXRReader
from examples.echo_cxr.data.records import CXRRecord, Rejected
from tests.echo_cxr.fixtures.chat_server import ChatServer, Reply, scripted

KEY = "sk-test-0123456789"
GOOD = json.dumps({"findings": "No pleural effusion.", "impression": "Normal chest."})
MSG = [{"role": "user", "content": "hi"}]
FIX = Path(__file__).resolve().parents[1] / "echo_cxr" / "fixtures"


def completion(content: str = GOOD) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                            "content": content}}]}).encode()


def response(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n" \
           f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    return head.encode() + body


class RawServer:
    """One thread accepting connections on an ephemeral 127.0.0.1 port.

    For each connection it reads the whole request (headers and the Content-Length body),
    records it as ``(headers: dict, body: bytes)`` and calls ``behave(conn, index)``, which
    writes whatever the test wants, well-formed or not.
    """

    def __init__(self, behave: Callable[[socket.socket, int], None]) -> None:
        self.behave = behave
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.connections = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            index = self.connections
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn, index), daemon=True).start()

    def _handle(self, conn: socket.socket, index: int) -> None:
        try:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:])}
            headers[":request-line"] = lines[0]
            while len(body) < int(headers.get("content-length", 0)):
                body += conn.recv(65536)
            self.requests.append((headers, body))
            self.behave(conn, index)
        except OSError:
            pass  # the client hung up (deadline, cap): what several tests provoke
        finally:
            conn.close()

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


def client(url: str, **kw) -> ChatClient:
    kw = {"timeout_s": 5.0, "max_retries": 1, "backoff_s": 0.0, "api_key": KEY, **kw}
    return ChatClient(url, model="test-model", **kw)


def failure(c: ChatClient) -> str:
    """The LLMError message of one chat; asserts the key is not in it."""
    with pytest.raises(LLMError) as info:
        c.chat(MSG)
    message = str(info.value)
    assert KEY not in message
    assert c.url in message or "127.0.0.1" in message, message
    return message


# --- the API key stays with the configured origin -------------------------------------------

@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_port_is_refused_and_the_second_server_sees_nothing(status: int) -> None:
    with RawServer(lambda conn, i: conn.sendall(response(completion()))) as other:
        target = f"{other.url}/v1/chat/completions"

        def redirect(conn: socket.socket, i: int) -> None:
            conn.sendall(response(b"", f"{status} Moved", f"Location: {target}\r\n"))

        with RawServer(redirect) as first:
            message = failure(client(first.url))
        assert first.requests[0][0]["authorization"] == f"Bearer {KEY}"
    assert "another origin" in message and target in message
    assert other.connections == 0 and other.requests == [], "the key went to another port"
    assert len(first.requests) == 1, "a refused redirect is not retried"


def test_a_307_to_the_same_origin_is_followed_with_the_key_and_the_body() -> None:
    def behave(conn: socket.socket, i: int) -> None:
        if i == 0:
            conn.sendall(response(b"", "307 Temporary Redirect", "Location: /v2/chat/completions\r\n"))
        else:
            conn.sendall(response(completion()))

    with RawServer(behave) as srv:
        text = client(srv.url).chat(MSG)
    assert parse_report_json(text)["impression"] == "Normal chest."
    (h0, b0), (h1, b1) = srv.requests
    assert h1[":request-line"] == "POST /v2/chat/completions HTTP/1.1"
    assert h1["authorization"] == f"Bearer {KEY}" and b1 == b0 and json.loads(b1)["messages"] == MSG


def test_a_302_to_the_same_origin_is_refused_since_it_would_drop_the_post() -> None:
    def behave(conn: socket.socket, i: int) -> None:
        conn.sendall(response(b"", "302 Found", "Location: /elsewhere\r\n"))

    with RawServer(behave) as srv:
        message = failure(client(srv.url))
    assert "only 307/308" in message and len(srv.requests) == 1


def test_proxy_variables_are_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy would see the key: the client connects to base_url directly whatever the env."""
    with RawServer(lambda conn, i: conn.sendall(response(completion()))) as proxy, \
            RawServer(lambda conn, i: conn.sendall(response(completion()))) as srv:
        for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.setenv(var, proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        client(srv.url).chat(MSG)
    assert proxy.connections == 0 and len(srv.requests) == 1


# --- every transport failure is the client's own error, naming endpoint and cause -----------

def test_a_non_utf8_body_names_the_byte() -> None:
    body = b'{"choices": [{"message": {"content": "caf\xe9"}}]}'
    with RawServer(lambda conn, i: conn.sendall(response(body))) as srv:
        message = failure(client(srv.url))
    assert "not UTF-8" in message and "\\xe9" in message and str(body.index(b"\xe9")) in message


def test_a_truncated_body_is_retried_then_reported() -> None:
    def truncated(conn: socket.socket, i: int) -> None:
        full = response(completion())
        head = full.replace(b"Content-Length: ", b"Content-Length: 9").split(b"\r\n\r\n")[0]
        conn.sendall(head + b"\r\n\r\n" + completion()[:20])  # announced 9xx bytes, sent 20

    with RawServer(truncated) as srv:
        message = failure(client(srv.url, max_retries=2))
    assert "mid-body" in message and "got 20 bytes" in message
    assert "after 3 attempts" in message and len(srv.requests) == 3


@pytest.mark.parametrize("status_line", [b"HTTTP/1.1 200 OK", b"HTTP/1.1 two hundred OK",
                                         b"\x00\xff garbage"])
def test_a_malformed_status_line(status_line: bytes) -> None:
    def behave(conn: socket.socket, i: int) -> None:
        conn.sendall(status_line + b"\r\nContent-Length: 2\r\n\r\n{}")

    with RawServer(behave) as srv:
        message = failure(client(srv.url))
    assert "malformed status line" in message and len(srv.requests) == 1


def test_a_connection_reset_is_retried_then_reported() -> None:
    def reset(conn: socket.socket, i: int) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST instead of FIN

    with RawServer(reset) as srv:
        message = failure(client(srv.url, max_retries=1))
    assert "ConnectionResetError" in message and "after 2 attempts" in message
    assert len(srv.requests) == 2


def test_a_reset_then_a_good_answer_recovers() -> None:
    def behave(conn: socket.socket, i: int) -> None:
        if i == 0:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        else:
            conn.sendall(response(completion()))

    with RawServer(behave) as srv:
        assert parse_report_json(client(srv.url).chat(MSG))["findings"] == "No pleural effusion."


def test_an_unreachable_endpoint_names_itself() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    message = failure(client(f"http://127.0.0.1:{port}"))
    assert f"127.0.0.1:{port}" in message and "ConnectionRefusedError" in message


# --- a total deadline per request and a cap on the body -------------------------------------

@pytest.mark.parametrize("where", ["body", "status line"])
def test_a_server_trickling_one_byte_per_200ms_hits_the_deadline(where: str) -> None:
    """The per-read timeout (5 s) never trips at one byte per 0.2 s; the 1 s deadline must."""
    def trickle(conn: socket.socket, i: int) -> None:
        if where == "body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(300):  # 60 s: far past any deadline the test accepts
            conn.sendall(b"H" if where == "status line" else b" ")
            time.sleep(0.2)

    with RawServer(trickle) as srv:
        start = time.monotonic()
        message = failure(client(srv.url, deadline_s=1.0, max_retries=0))
        elapsed = time.monotonic() - start
    assert "within the 1.0s deadline" in message
    assert elapsed < 15, f"the deadline did not stop the request ({elapsed:.1f}s)"


def test_a_body_announced_over_the_cap_is_refused() -> None:
    big = completion("x" * 5000)
    with RawServer(lambda conn, i: conn.sendall(response(big))) as srv:
        message = failure(client(srv.url, max_body_bytes=4096))
    assert f"announced a {len(big)}-byte body" in message and "max_body_bytes=4096" in message
    assert len(srv.requests) == 1


def test_a_body_streamed_past_the_cap_without_length_is_cut() -> None:
    def endless(conn: socket.socket, i: int) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for _ in range(1000):  # up to 64 MiB, far past the 1 MiB cap
            conn.sendall(b"x" * 65536)

    with RawServer(endless) as srv:
        message = failure(client(srv.url, max_body_bytes=2**20))
    assert "more than max_body_bytes=1048576" in message


# --- an endpoint failure is not a property of the record ------------------------------------

def test_a_record_specific_refusal_rejects_only_that_record() -> None:
    """HTTP 400 (e.g. the prompt exceeds the model's context) judges the request: a reject."""
    with ChatServer(scripted([Reply(status=400), Reply(content=GOOD)])) as srv:
        rejects: list[Rejected] = []
        records = [CXRRecord("s1", "mimic_cxr", findings="Lungs clear."),
                   CXRRecord("s2", "mimic_cxr", findings="Heart normal.")]
        out = list(LLMStandardizer(client(srv.url, api_key=None)).process(records, rejects.append))
    assert [r.study_id for r in out] == ["s2"]
    assert [r.key for r in rejects] == ["mimic_cxr/s1"] and "HTTP 400" in rejects[0].reason


def test_an_outage_saves_no_rejects_and_a_rerun_curates_every_record(tmp_path: Path) -> None:
    """Outage run (refused, then HTTP 500 on every request) -> rerun on a working server."""
    def stages(url: str, **kw) -> list:
        return [ModalityFilter(), LLMStandardizer(client(url, api_key=None, max_retries=1, **kw),
                                                  concurrency=2)]

    readers = [MimicCXRReader(FIX / "mimic_cxr")]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    with pytest.raises(EndpointFailure, match="ConnectionRefusedError.*nothing of this step was saved"):
        Pipeline(stages(dead), tmp_path, progress=False).run(readers)
    with ChatServer(scripted([Reply(status=500)])) as failing:
        with pytest.raises(EndpointFailure, match="HTTP 500"):
            Pipeline(stages(failing.url), tmp_path, progress=False).run(readers)
    assert not list((tmp_path / "stages").glob("02_standardize*")), "outage results were saved"
    assert not (tmp_path / "rejects.jsonl").exists()

    def echo(body: dict, i: int) -> Reply:
        return Reply(content=json.dumps({"findings": "Clear.", "impression": f"Report {i}."}))

    with ChatServer(echo) as working:
        summary = Pipeline(stages(working.url), tmp_path, progress=False).run(readers)
    step = {s["stage"]: s for s in summary["stages"]}["standardize"]
    rejects = [Rejected.from_json(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert step["in"] == step["out"] > 0 and step["rejected"] == 0
    assert not [r for r in rejects if r.stage == "standardize"]
    assert len(working.requests) == step["in"], "every record was sent exactly once"
