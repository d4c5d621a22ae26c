"""LLM users: a language model reads each user's prompt and its answer distribution is the decision.

``LLMUser`` implements the ``UserSimulator`` protocol, so ``gym.make("RecSim-LLM-v0",
user_model="llm", llm={...})`` swaps it in for the embedded choice model and every dynamic (drift,
satiation, boredom, social influence, memory) keeps running on its answers.

Per step and batch of users:

1. ``build_prompts``: persona, interest text, memory, friends' likes, the lettered slate;
2. one scoring pass: log p(letter) for each slate position and for "none of these";
3. the choice is drawn from those probabilities (``temperature`` applied) with the world's counter
   RNG, so runs replay exactly and a user's draw does not depend on the batch;
4. for users who clicked, one more pass scores the rating digits 1-5 after the chosen letter, and
   the rating is drawn from them; watch time follows from the rating as in the embedded model;
5. rows whose scores are unusable (non-finite, or the backend returned nothing for them) are
   answered by the embedded choice model instead and flagged in ``Responses.fallback``;
   ``stats`` counts them, and the env reports them in ``info["fallback"]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.base import Responses
from agents.choice import ChoiceConfig, MultinomialLogitUser
from agents.llm.prompts import ANSWER_CUE, RATING_CUE, RATINGS, PromptConfig, build_prompts, option_labels, \
    rating_suffix

if TYPE_CHECKING:
    from simenv.world import World

BACKENDS = ("local", "http")
_STREAM = 7  # custom counter-RNG stream of LLM users' draws (the embedded model uses its own streams)


@dataclass(frozen=True)
class LLMUserConfig:
    """How LLM users are run (``gym.make(..., user_model="llm", llm={...})``)."""

    backend: str = "local"  # "local": transformers in this process; "http": an OpenAI-compatible server
    model: str | None = None  # local: a Hugging Face model folder; http: the served model's name
    base_url: str | None = None  # http: e.g. "http://127.0.0.1:8000/v1"
    batch_size: int = 32  # prompts per forward pass (local) or per concurrent wave (http)
    prefix_cache: int = 4096  # local: persona prefixes kept encoded (0: off)
    temperature: float = 1.0  # divides the answer log-probabilities before the draw
    device: str | None = None  # local: "cuda" when present, else "cpu"
    timeout: float = 30.0  # http: seconds per request
    retries: int = 3  # http: tries after the first before a dead server is an error
    prompt: PromptConfig = field(default_factory=PromptConfig)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"llm.backend={self.backend!r}: use one of {BACKENDS}.")
        if not self.temperature > 0:
            raise ValueError(f"llm.temperature={self.temperature!r}: must be > 0.")
        if isinstance(self.prompt, dict):
            known = {f.name for f in fields(PromptConfig)}
            unknown = set(self.prompt) - known
            if unknown:
                raise ValueError(f"llm.prompt: unknown keys {sorted(unknown)}; known: {sorted(known)}.")
            object.__setattr__(self, "prompt", PromptConfig(**self.prompt))

    @classmethod
    def from_value(cls, value: Any) -> "LLMUserConfig":
        if isinstance(value, cls):
            return value
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise TypeError(f"llm: expected a dict or LLMUserConfig, got {type(value).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"llm: unknown keys {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**value)


def make_scorer(config: LLMUserConfig) -> Any:
    """The backend named by the config (see ``agents.llm.local`` and ``agents.llm.http``)."""
    if config.model is None:
        raise ValueError("llm.model: name the language model (a local model folder for backend='local', e.g. the "
                         "output of `recsim-llm train-user-lm`; the served model's name for backend='http').")
    if config.backend == "local":
        from agents.llm.local import LocalLM

        return LocalLM(config.model, device=config.device, batch_size=config.batch_size,
                       prefix_cache=config.prefix_cache)
    from agents.llm.http import HTTPScorer

    if not config.base_url:
        raise ValueError("llm.base_url: backend='http' needs the server's URL, e.g. 'http://127.0.0.1:8000/v1'.")
    return HTTPScorer(config.base_url, config.model, concurrency=config.batch_size, timeout=config.timeout,
                      retries=config.retries)


class LLMUser:
    """The ``UserSimulator`` of LLM users (see the module docstring).

    Args:
        config: an ``LLMUserConfig`` or a dict of its fields.
        scorer: a ready backend (anything with ``answer_tokens`` and ``next_token_logprobs``, e.g.
            ``LocalLM``); built from ``config`` when omitted.
        choice: options of the embedded choice model used as the fallback.
    """

    def __init__(self, config: Any = None, scorer: Any = None, choice: ChoiceConfig | None = None) -> None:
        self.config = LLMUserConfig.from_value(config)
        self.scorer = scorer if scorer is not None else make_scorer(self.config)
        self.fallback_model = MultinomialLogitUser(choice or ChoiceConfig())
        self.stats = {"decisions": 0, "unusable": 0, "ratings_unusable": 0}
        self._answers: dict[int, tuple[str, np.ndarray]] = {}
        self._rating_answer: tuple[str, np.ndarray] | None = None

    def _answer(self, k: int) -> tuple[str, np.ndarray]:
        if k not in self._answers:
            self._answers[k] = self.scorer.answer_tokens(ANSWER_CUE, option_labels(k))
        return self._answers[k]

    def option_logprobs(self, world: "World", users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """(B, k + 1) log-probabilities of each slate position and, last, of "none", renormalised over
        the options; rows the backend could not score are NaN."""
        return self._score_options(world, np.asarray(users, np.int64), np.asarray(slates))[0]

    def _score_options(self, world: "World", users: np.ndarray, slates: np.ndarray):
        prompts = build_prompts(world, users, slates, self.config.prompt, social=world.social.num_edges > 0)
        end, ids = self._answer(slates.shape[1])
        tail = end[len(ANSWER_CUE):]
        suffixes = [s + q + tail for s, q in zip(prompts.state, prompts.question)]
        logp = np.asarray(self.scorer.next_token_logprobs(prompts.persona, suffixes, ids), np.float64)
        return _renormalise(logp), prompts.persona, suffixes

    def respond(self, world: "World", users: np.ndarray, slates: np.ndarray) -> Responses:
        users = np.asarray(users, np.int64)
        slates = np.asarray(slates)
        b, k = slates.shape
        logp, personas, suffixes = self._score_options(world, users, slates)
        usable = np.isfinite(logp).all(axis=1)
        u = world.uniforms(users, 2, stream=_STREAM)
        option = _draw(np.where(usable[:, None], logp, 0.0) / self.config.temperature, u[:, 0])
        choice = np.where(option == k, -1, option).astype(np.int32)
        clicked = (choice >= 0) & usable
        rating = np.zeros(b, np.float32)
        rating_ok = np.ones(b, bool)
        if clicked.any():
            rows = np.flatnonzero(clicked)
            labels = option_labels(k)
            texts = [suffixes[r] + rating_suffix(labels[choice[r]]) for r in rows]
            rating[rows], rating_ok[rows] = self._ratings([personas[r] for r in rows], texts, u[rows, 1])
        fallback = ~usable | ~rating_ok
        items = slates[np.arange(b), np.maximum(choice, 0)]
        watch = np.where(choice >= 0, world.catalog.duration[items] * (0.25 + 0.75 * (rating - 1) / 4), 0.0)
        out = Responses(choice, rating, watch.astype(np.float32), fallback.copy())
        if fallback.any():
            rows = np.flatnonzero(fallback)
            embedded = self.fallback_model.respond(world, users[rows], slates[rows])
            out.choice[rows], out.rating[rows], out.watch_time[rows] = (
                embedded.choice, embedded.rating, embedded.watch_time)
        self.stats["decisions"] += b
        self.stats["unusable"] += int((~usable).sum())
        return out

    def _ratings(self, personas: list[str], texts: list[str], draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ratings 1-5 drawn from the model's digit probabilities after the chosen letter (``texts``
        end with it and the rating cue); also whether each row was usable."""
        if self._rating_answer is None:
            self._rating_answer = self.scorer.answer_tokens(RATING_CUE, RATINGS)
        end, ids = self._rating_answer
        tail = end[len(RATING_CUE):]
        logp = _renormalise(np.asarray(self.scorer.next_token_logprobs(personas, [t + tail for t in texts], ids),
                                       np.float64))
        ok = np.isfinite(logp).all(axis=1)
        self.stats["ratings_unusable"] += int((~ok).sum())
        return (1 + _draw(np.where(ok[:, None], logp, 0.0), draws)).astype(np.float32), ok


def _draw(logits: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(B,) index drawn from softmax(logits) by inverting its CDF at the uniforms ``u``."""
    cdf = np.cumsum(np.exp(_renormalise(logits)), axis=1)
    return np.minimum((cdf < u[:, None]).sum(axis=1), logits.shape[1] - 1)


def _renormalise(logp: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis; rows with any non-finite entry become all NaN."""
    bad = ~np.isfinite(logp).all(axis=1)
    safe = np.where(bad[:, None], 0.0, logp)
    top = safe.max(axis=1, keepdims=True)
    out = safe - top - np.log(np.exp(safe - top).sum(axis=1, keepdims=True))
    out[bad] = np.nan
    return out

