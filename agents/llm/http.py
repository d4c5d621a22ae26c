"""LLM users served by any OpenAI-compatible HTTP server (vLLM, ``transformers serve``, ...).

One ``/v1/completions`` request per user prompt, ``concurrency`` in flight at once, one answer token.
Servers that return ``logprobs`` (vLLM) give the answer distribution directly: the top log-probabilities
of the answer letters, with letters outside the top list set just below the least likely listed one.
Servers that ignore ``logprobs`` (``transformers serve``) are answered by parsing the generated text:
the letter it names gets probability ``1 - eps``, the others share ``eps``. Text that names no option,
or a body that is not the expected JSON, makes that row unusable (NaN): ``LLMUser`` counts it and the
embedded model answers for that user. A server that does not answer at all (refused connection,
timeout, 5xx) is retried with exponential backoff, then ``LLMServerError`` names the URL and what was
tried: a dead server stops the run instead of silently turning every user into the fallback.

``generate`` (free-text feedback, only when asked for) sends the same requests with ``max_tokens`` new
tokens at temperature 0 and no ``logprobs``, with the same retries; a body without text gives "".
"""
from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Hashable, Sequence

import numpy as np

PARSED_EPS = 0.05  # probability mass left to the options a parsed (text-only) answer did not name


class LLMServerError(RuntimeError):
    """The LLM server could not be reached or refused the request."""


class HTTPScorer:
    """Answer scoring over an OpenAI-compatible ``/v1/completions`` endpoint (see the module docstring)."""

    def __init__(self, base_url: str, model: str, concurrency: int = 32, timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.5, top_logprobs: int = 20) -> None:
        self.url = base_url.rstrip("/") + "/completions"
        self.model = model
        self.concurrency = max(1, concurrency)
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.top_logprobs = top_logprobs
        self.counts = {"requests": 0, "retries": 0, "with_logprobs": 0, "parsed": 0, "unparseable": 0}
        self._lock = threading.Lock()  # requests run in a thread pool

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def answer_tokens(self, cue: str, labels: Sequence[str]) -> tuple[str, np.ndarray]:
        """The prompt ends with the cue; the answers are the labels themselves (matched as text)."""
        return cue, np.asarray(list(labels), dtype=object)

    def next_token_logprobs(self, prefixes: Sequence[str], suffixes: Sequence[str], labels: np.ndarray,
                            keys: Sequence[Hashable] | None = None) -> np.ndarray:
        """(B, n) log-probabilities of the answer labels; NaN rows where the answer was unusable."""
        prompts = [p + s for p, s in zip(prefixes, suffixes)]
        with ThreadPoolExecutor(self.concurrency) as pool:
            bodies = list(pool.map(self._post, prompts))
        return np.stack([self._row(body, list(labels)) for body in bodies]) if bodies else \
            np.zeros((0, len(labels)))

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        """Greedy (temperature 0) completion of each prompt, at most ``max_new_tokens`` tokens, stripped."""
        with ThreadPoolExecutor(self.concurrency) as pool:
            bodies = list(pool.map(lambda p: self._post(p, max_new_tokens, logprobs=False), prompts))
        return [_text(body) for body in bodies]

    # one request ---------------------------------------------------------------------------------------
    def _post(self, prompt: str, max_tokens: int = 2, logprobs: bool = True) -> Any:
        fields = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0}
        if logprobs:
            fields["logprobs"] = self.top_logprobs
        payload = json.dumps(fields).encode()
        tried = []
        for attempt in range(self.retries + 1):
            if attempt:
                self._count("retries")
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=payload, headers={"Content-Type": "application/json"})
            try:
                self._count("requests")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as err:
                if err.code < 500:
                    raise LLMServerError(f"{self.url} refused the request: HTTP {err.code} "
                                         f"{err.read()[:200]!r} (model={self.model!r}).") from err
                tried.append(f"HTTP {err.code}")
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                tried.append(type(err).__name__ + ": " + str(getattr(err, "reason", err)))
                continue
            try:
                return json.loads(raw)
            except ValueError:
                return None  # garbage: the row is unusable, not the server
        raise LLMServerError(f"no answer from {self.url} after {self.retries + 1} tries "
                             f"(timeout {self.timeout:g} s, backoff {self.backoff:g} s doubling): {'; '.join(tried)}")

    def _row(self, body: Any, labels: list[str]) -> np.ndarray:
        out = np.full(len(labels), np.nan)
        try:
            choice = body["choices"][0]
            text = choice.get("text") or ""
            logprobs = choice.get("logprobs") or {}
            top = (logprobs.get("top_logprobs") or [None])[0]
        except (KeyError, IndexError, TypeError, AttributeError):
            self._count("unparseable")
            return out
        if isinstance(top, dict) and top:
            found = {}
            for token, lp in top.items():
                t = str(token).strip()
                if t in labels and t not in found:
                    found[t] = float(lp)
            if found:
                floor = min(float(v) for v in top.values()) - 1.0
                self._count("with_logprobs")
                return np.array([found.get(label, floor) for label in labels])
        m = re.match(r"\s*([A-Za-z0-9]+)", text)
        answer = m.group(1) if m else ""
        if answer in labels:
            self._count("parsed")
            n = len(labels)
            out[:] = math.log(PARSED_EPS / max(n - 1, 1))
            out[labels.index(answer)] = math.log(1 - PARSED_EPS)
            return out
        self._count("unparseable")
        return out


def _text(body: Any) -> str:
    """The completion text of a response body, stripped; "" when the body has none."""
    try:
        text = body["choices"][0]["text"]
    except (KeyError, IndexError, TypeError):
        return ""
    return text.strip() if isinstance(text, str) else ""
