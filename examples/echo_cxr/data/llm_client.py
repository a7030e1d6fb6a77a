"""A small client for OpenAI-compatible chat-completions servers (vLLM, SGLang), stdlib only.

Curation stages 2 (LLM standardiser) and 4 (translation) send one report per request to
``POST {base_url}/v1/chat/completions`` (e.g. a vLLM server running Baichuan-M2-32B) and need
exactly ``{"findings": str, "impression": str}`` back. This module owns the transport (a
per-read timeout, a total deadline per request, a cap on the body, retries with backoff, a
requests-per-second limit) and the strict validation of that answer::

    client = ChatClient("http://127.0.0.1:8000", model="baichuan-inc/Baichuan-M2-32B")
    answer = parse_report_json(client.chat([{"role": "user", "content": prompt}]))

Why ``http.client`` and not ``urllib``/``requests``/``httpx``: none of them has a total deadline
per request (only per-read timeouts, which a server trickling one byte at a time never trips)
and ``urllib`` silently returns a truncated body and forwards the API key across redirects to
another port of the same host. The transport here is small enough to own: one connection per
request, a watchdog that shuts the socket at the deadline, every failure raised as
:class:`LLMError` naming the endpoint and the cause.

Redirects: only ``307``/``308`` to the *same origin* (scheme, host and port) are followed, with
the same body and key, at most :data:`MAX_REDIRECTS` times. Any other redirect (another host or
port, or ``301/302/303``, which would turn the POST into a GET) is refused with an error naming
the target, so the key is never sent anywhere but ``base_url``. Proxy environment variables are
not used for the same reason.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

REPORT_KEYS = ("findings", "impression")
MAX_REDIRECTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)
_RECORD_STATUSES = (400, 413, 422)
"""HTTP statuses where the server judged this request (e.g. a prompt over the model's context)."""


class LLMError(RuntimeError):
    """The server could not produce an answer (after retries); the message says why.

    ``record_specific`` is true only when the server rejected this request itself (HTTP 400,
    413, 422: e.g. a report too long for the model's context). Every other failure (refused
    connection, reset, timeout, deadline, 5xx, 429, auth, redirect, broken protocol) is a
    property of the endpoint, not of the record: the curation stages stop instead of rejecting.
    """

    def __init__(self, message: str, record_specific: bool = False) -> None:
        super().__init__(message)
        self.record_specific = record_specific


class InvalidAnswer(ValueError):
    """The model answered, but not with the required JSON object; the message says how."""


class _Retry(Exception):
    """A failure worth another attempt (network, timeout, 429, 5xx); the message says why."""


@dataclass
class RateLimiter:
    """At most ``requests_per_s`` request starts per second, shared by all threads."""

    requests_per_s: float | None
    _next: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        if self.requests_per_s is not None and self.requests_per_s <= 0:
            raise ValueError(f"requests_per_s={self.requests_per_s}; expected > 0 or None")

    def wait(self) -> None:
        """Block until the next request may start."""
        if self.requests_per_s is None:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + 1.0 / self.requests_per_s
        if start > now:
            time.sleep(start - now)


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int]:
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


@dataclass
class ChatClient:
    """Chat-completions client with timeouts, a deadline, retries and a rate limit. Thread-safe.

    Transport failures (refused connections, resets, truncated bodies, timeouts, the deadline,
    HTTP 429 and 5xx) are retried up to ``max_retries`` times with exponential backoff; other
    HTTP errors, refused redirects and malformed responses (status line, non-UTF-8 or non-JSON
    body, a body over the cap) fail at once. A model answer that is not the JSON we asked for
    is not retried: at temperature 0 it would repeat; the caller rejects the record instead.
    """

    base_url: str
    """Server root, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is accepted)."""
    model: str
    """Model name the server serves, e.g. ``baichuan-inc/Baichuan-M2-32B``."""
    api_key: str | None = None
    """Sent as ``Authorization: Bearer ...`` to ``base_url``'s origin only, never elsewhere."""
    timeout_s: float = 120.0
    """Per-operation socket timeout (connect, and each read or write)."""
    deadline_s: float = 600.0
    """Total time for one request (connect, send, status line, headers and body)."""
    max_body_bytes: int = 8 * 2**20
    """Largest response body accepted; a larger one (or Content-Length) fails the request."""
    max_retries: int = 3
    """Retries after the first attempt, for retryable failures only."""
    backoff_s: float = 1.0
    """Sleep before retry k is ``backoff_s * 2**k``."""
    requests_per_s: float | None = None
    """Rate limit across threads; ``None`` for none."""
    temperature: float = 0.0
    max_tokens: int = 2048
    json_mode: bool = False
    """Send ``response_format={"type": "json_object"}`` (vLLM/SGLang guided decoding)."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={self.base_url!r}; expected an http(s):// URL")
        if (self.timeout_s <= 0 or self.deadline_s <= 0 or self.max_body_bytes <= 0
                or self.max_retries < 0 or self.backoff_s < 0):
            raise ValueError(
                f"timeout_s={self.timeout_s}, deadline_s={self.deadline_s}, "
                f"max_body_bytes={self.max_body_bytes}, max_retries={self.max_retries}, "
                f"backoff_s={self.backoff_s}; expected the first three > 0 and the others >= 0"
            )
        root = self.base_url.rstrip("/")
        root = root[: -len("/v1")] if root.endswith("/v1") else root
        self.url = f"{root}/v1/chat/completions"
        self._origin = _origin(urllib.parse.urlsplit(self.url))
        self._limiter = RateLimiter(self.requests_per_s)

    def params(self) -> dict[str, Any]:
        """Settings that change answers (for resume checks); never the API key."""
        return {"url": self.url, "model": self.model, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "json_mode": self.json_mode}

    def request_body(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """The JSON body :meth:`chat` sends for ``messages`` (what an answer journal keys on)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages,
                                "temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def chat(self, messages: list[dict[str, str]]) -> str:
        """Send one conversation; return the assistant message text or raise :class:`LLMError`."""
        data = json.dumps(self.request_body(messages)).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            self._limiter.wait()
            try:
                return _message_text(self._post(data), self.url)
            except _Retry as err:
                last = str(err)
        raise LLMError(f"{last} (gave up after {self.max_retries + 1} attempts)")

    def _post(self, data: bytes) -> bytes:
        """One request, redirects to the same origin included; the 200 body or an error."""
        url = self.url
        for _hop in range(MAX_REDIRECTS + 1):
            status, location, payload = self._exchange(url, data)
            if status in _REDIRECTS:
                url = self._follow(url, status, location)
                continue
            if status == 200:
                return payload
            detail = payload[:200].decode("utf-8", "replace")
            message = f"HTTP {status} from {url}: {detail}"
            if status == 429 or status >= 500:
                raise _Retry(message)
            raise LLMError(message, record_specific=status in _RECORD_STATUSES)
        raise LLMError(f"{self.url}: more than {MAX_REDIRECTS} redirects (last to {url})")

    def _follow(self, url: str, status: int, location: str | None) -> str:
        if not location:
            raise LLMError(f"HTTP {status} from {url} without a Location header")
        target = urllib.parse.urljoin(url, location)
        if _origin(urllib.parse.urlsplit(target)) != self._origin:
            raise LLMError(
                f"{url} redirected (HTTP {status}) to {target}, another origin; not followed, "
                f"so the API key stays with {self.url}: set base_url to the server's own address"
            )
        if status not in (307, 308):
            raise LLMError(
                f"{url} redirected (HTTP {status}) to {target}; only 307/308 keep the POST body "
                "and are followed: set base_url to the final address"
            )
        return target

    def _exchange(self, url: str, data: bytes) -> tuple[int, str | None, bytes]:
        """POST ``data`` to ``url`` within the deadline; ``(status, Location, body)``."""
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(parts.hostname, parts.port, timeout=min(self.timeout_s, self.deadline_s))
        expired = threading.Event()

        def expire() -> None:  # wakes a read blocked on a server that trickles bytes
            expired.set()
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        watchdog = threading.Timer(self.deadline_s, expire)
        watchdog.daemon = True
        watchdog.start()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            conn.request("POST", path, body=data, headers=headers)
            response = conn.getresponse()
            payload = self._read_body(response, url)
            if expired.is_set():
                raise _Retry(self._deadline_message(url))
            return response.status, response.getheader("Location"), payload
        except (LLMError, _Retry):
            raise
        except TimeoutError as err:
            if expired.is_set():
                raise _Retry(self._deadline_message(url)) from err
            raise _Retry(f"timed out after {self.timeout_s}s waiting for {url} ({err})") from err
        except http.client.BadStatusLine as err:
            if expired.is_set() or isinstance(err, http.client.RemoteDisconnected):
                cause = (self._deadline_message(url) if expired.is_set()
                         else f"{url} closed the connection without a response ({err})")
                raise _Retry(cause) from err
            raise LLMError(f"{url} sent a malformed status line: {str(err)[:120]!r}") from err
        except (http.client.HTTPException, OSError) as err:
            if expired.is_set():
                raise _Retry(self._deadline_message(url)) from err
            if isinstance(err, http.client.IncompleteRead):
                raise _Retry(f"{url} closed the connection mid-body: got {len(err.partial)} "
                             f"bytes, {err.expected} more were announced") from err
            if isinstance(err, http.client.HTTPException):  # LineTooLong, bad headers, ...
                raise LLMError(f"{url} broke the HTTP protocol: {type(err).__name__}: {err}") from err
            raise _Retry(f"connection to {url} failed: {type(err).__name__}: {err}") from err
        finally:
            watchdog.cancel()
            conn.close()

    def _deadline_message(self, url: str) -> str:
        return f"{url} did not finish answering within the {self.deadline_s}s deadline"

    def _read_body(self, response: http.client.HTTPResponse, url: str) -> bytes:
        announced = response.getheader("Content-Length")
        if announced is not None and announced.strip().isdigit() and int(announced) > self.max_body_bytes:
            raise LLMError(f"{url} announced a {int(announced)}-byte body; the cap is "
                           f"max_body_bytes={self.max_body_bytes}")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = response.read(min(65536, self.max_body_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_body_bytes:
                raise LLMError(f"{url} sent more than max_body_bytes={self.max_body_bytes} bytes")
        if response.length:  # read(n) returns b"" on an early close instead of raising
            raise http.client.IncompleteRead(b"".join(chunks), response.length)
        return b"".join(chunks)


def _message_text(payload: bytes, url: str) -> str:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LLMError(
            f"{url} sent a body that is not UTF-8 (byte {payload[err.start:err.start + 1]!r} at "
            f"offset {err.start}); body starts {payload[:60]!r}"
        ) from err
    try:
        obj = json.loads(text)
        content = obj["choices"][0]["message"]["content"]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
        raise LLMError(
            f"{url} did not answer in the chat-completions format ({type(err).__name__}: {err}); "
            f"body starts {payload[:120]!r}"
        ) from err
    if not isinstance(content, str):
        raise LLMError(f"{url} answered with message content of type {type(content).__name__}")
    return content


_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)


def parse_report_json(text: str) -> dict[str, str]:
    """Validate a model answer as exactly ``{"findings": str, "impression": str}``.

    Tolerated wrappers, because reasoning models and chat templates add them: one leading
    ``<think>...</think>`` block and one surrounding Markdown code fence. Anything else (prose
    around the JSON, extra or missing keys, non-string values) raises :class:`InvalidAnswer`.
    """
    body = _THINK.sub("", text, count=1)
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group("body")
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as err:
        raise InvalidAnswer(f"answer is not valid JSON ({err.msg} at char {err.pos}): {text[:80]!r}") from None
    if not isinstance(obj, dict):
        raise InvalidAnswer(f"answer is a JSON {type(obj).__name__}; expected an object")
    if set(obj) != set(REPORT_KEYS):
        raise InvalidAnswer(
            f"answer has keys {sorted(obj)}; expected exactly {list(REPORT_KEYS)}"
        )
    for key in REPORT_KEYS:
        if not isinstance(obj[key], str):
            raise InvalidAnswer(f"answer's {key!r} is {type(obj[key]).__name__}; expected a string")
    if not (obj["findings"].strip() or obj["impression"].strip()):
        raise InvalidAnswer("answer has empty findings and impression")
    return {key: obj[key].strip() for key in REPORT_KEYS}
