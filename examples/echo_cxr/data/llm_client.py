"""A small client for OpenAI-compatible chat-completions servers (vLLM, SGLang), stdlib only.

Curation stages 2 (LLM standardiser) and 4 (translation) send one report per request to
``POST {base_url}/v1/chat/completions`` (e.g. a vLLM server running Baichuan-M2-32B) and need
exactly ``{"findings": str, "impression": str}`` back. This module owns the transport (timeouts,
retries with backoff, a requests-per-second limit) and the strict validation of that answer::

    client = ChatClient("http://127.0.0.1:8000", model="baichuan-inc/Baichuan-M2-32B")
    answer = parse_report_json(client.chat([{"role": "user", "content": prompt}]))
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

REPORT_KEYS = ("findings", "impression")


class LLMError(RuntimeError):
    """The server could not produce an answer (after retries); the message says why."""


class InvalidAnswer(ValueError):
    """The model answered, but not with the required JSON object; the message says how."""


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


@dataclass
class ChatClient:
    """Chat-completions client with timeouts, retries and a rate limit. Thread-safe.

    Transport failures (timeouts, refused connections, HTTP 429 and 5xx) are retried up to
    ``max_retries`` times with exponential backoff; other HTTP errors and malformed protocol
    responses fail at once. A model answer that is not the JSON we asked for is not retried:
    at temperature 0 it would repeat; the caller rejects the record instead.
    """

    base_url: str
    """Server root, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is accepted)."""
    model: str
    """Model name the server serves, e.g. ``baichuan-inc/Baichuan-M2-32B``."""
    api_key: str | None = None
    timeout_s: float = 120.0
    """Per-request socket timeout (connect and each read)."""
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
        if self.timeout_s <= 0 or self.max_retries < 0 or self.backoff_s < 0:
            raise ValueError(
                f"timeout_s={self.timeout_s}, max_retries={self.max_retries}, "
                f"backoff_s={self.backoff_s}; expected timeout > 0 and the others >= 0"
            )
        root = self.base_url.rstrip("/")
        root = root[: -len("/v1")] if root.endswith("/v1") else root
        self.url = f"{root}/v1/chat/completions"
        self._limiter = RateLimiter(self.requests_per_s)

    def params(self) -> dict[str, Any]:
        """Settings that change answers (for resume checks); never the API key."""
        return {"url": self.url, "model": self.model, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "json_mode": self.json_mode}

    def chat(self, messages: list[dict[str, str]]) -> str:
        """Send one conversation; return the assistant message text or raise :class:`LLMError`."""
        body: dict[str, Any] = {"model": self.model, "messages": messages,
                                "temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            self._limiter.wait()
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    payload = response.read()
            except urllib.error.HTTPError as err:
                detail = err.read()[:200].decode("utf-8", "replace")
                last = f"HTTP {err.code} from {self.url}: {detail}"
                if err.code == 429 or err.code >= 500:
                    continue
                raise LLMError(last) from err
            except TimeoutError as err:
                last = f"timed out after {self.timeout_s}s waiting for {self.url} ({err})"
                continue
            except (urllib.error.URLError, ConnectionError, OSError) as err:
                last = f"cannot reach {self.url}: {getattr(err, 'reason', err)}"
                continue
            return _message_text(payload, self.url)
        raise LLMError(f"{last} (gave up after {self.max_retries + 1} attempts)")


def _message_text(payload: bytes, url: str) -> str:
    try:
        obj = json.loads(payload)
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
