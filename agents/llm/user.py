"""LLM users: a language model reads each user's prompt and its answer distribution is the decision.

``LLMUser`` implements the ``UserSimulator`` protocol, so ``gym.make("RecSim-LLM-v0",
user_model="llm", llm={...})`` swaps it in for the embedded choice model and every dynamic (drift,
satiation, boredom, social influence, memory) keeps running on its answers.

Per step and batch of users:

1. ``build_prompts``: persona, interest text, memory, friends' likes, the lettered slate;
2. one scoring pass: log p(letter) for each slate position and for "none of these";
3. the choice is drawn from those probabilities (``temperature`` applied) with the world's counter
   RNG, so runs replay exactly and a user's draw does not depend on the batch;
4. for users who clicked, the rating digits 1-5 are scored after the chosen letter and the rating
   cue, and the rating is drawn from them (a local backend continues the choice pass's key/value
   states, so this costs the ~10 tokens of the answer and the cue, not the prompt again); watch
   time follows from the rating as in the embedded model;
5. rows whose scores are unusable (non-finite, or the backend returned nothing for them) are
   answered by the embedded choice model instead and flagged in ``Responses.fallback``;
   ``stats`` counts them, and the env reports them in ``info["fallback"]``;
6. only when ``feedback_tokens > 0``: every user also says in free text why it chose what it chose
   (``feedback``: the prompt, the final answer, ``FEEDBACK_CUE``, then greedy generation; a fallback
   row's answer is the embedded model's). It costs a prompt pass and up to ``feedback_tokens``
   decode passes per batch, more than the decision itself, so it is off by default. The env's
   ``info`` holds arrays the simulation builds, so the texts stay on the user model:
   ``last_feedback`` has the texts of the latest ``respond`` call, in the order of
   ``last_feedback_users`` (the users it was asked about; in a vector env, the active slots' users).
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
FEEDBACK_CUE = "\nWhy? In one sentence, say why, or what you would rather watch:"
FEEDBACK_TOKENS = 32  # new tokens of a direct ``feedback`` call when the config leaves per-step feedback off


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
    feedback_tokens: int = 0  # >0: every decision also generates this many tokens of free-text feedback
    prompt: PromptConfig = field(default_factory=PromptConfig)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"llm.backend={self.backend!r}: use one of {BACKENDS}.")
        if not self.temperature > 0:
            raise ValueError(f"llm.temperature={self.temperature!r}: must be > 0.")
        if isinstance(self.feedback_tokens, bool) or not isinstance(self.feedback_tokens, int) \
                or self.feedback_tokens < 0:
            raise ValueError(f"llm.feedback_tokens={self.feedback_tokens!r}: must be a non-negative integer "
                             "(0: no feedback).")
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
            ``LocalLM``; also ``generate`` for feedback); built from ``config`` when omitted.
        choice: options of the embedded choice model used as the fallback.

    Attributes:
        last_feedback: with ``feedback_tokens > 0``, the feedback texts of the latest ``respond`` call.
        last_feedback_users: (B,) int64 user ids of those texts, in the same order.
    """

    def __init__(self, config: Any = None, scorer: Any = None, choice: ChoiceConfig | None = None) -> None:
        self.config = LLMUserConfig.from_value(config)
        self.scorer = scorer if scorer is not None else make_scorer(self.config)
        if self.config.feedback_tokens and not hasattr(self.scorer, "generate"):
            raise ValueError(f"llm.feedback_tokens={self.config.feedback_tokens}: the backend "
                             f"{type(self.scorer).__name__} has no generate(prompts, max_new_tokens).")
        self.last_feedback: list[str] = []
        self.last_feedback_users = np.zeros(0, np.int64)
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
        personas, suffixes, ids = self._prompts(world, np.asarray(users, np.int64), np.asarray(slates))
        return _renormalise(np.asarray(self.scorer.next_token_logprobs(personas, suffixes, ids), np.float64))

    def _prompts(self, world: "World", users: np.ndarray, slates: np.ndarray
                 ) -> tuple[list[str], list[str], np.ndarray]:
        """Persona prefixes, state + question suffixes ending where the answer goes, answer tokens."""
        prompts = build_prompts(world, users, slates, self.config.prompt, social=world.social.num_edges > 0)
        end, ids = self._answer(slates.shape[1])
        tail = end[len(ANSWER_CUE):]
        return prompts.persona, [s + q + tail for s, q in zip(prompts.state, prompts.question)], ids

    def respond(self, world: "World", users: np.ndarray, slates: np.ndarray) -> Responses:
        users = np.asarray(users, np.int64)
        slates = np.asarray(slates)
        b, k = slates.shape
        personas, suffixes, ids = self._prompts(world, users, slates)
        u = world.uniforms(users, 2, stream=_STREAM)
        labels = option_labels(k)
        # A backend that can continue its last prompts (``continued_logprobs``) scores each rating from
        # the choice pass's key/value states, a batch at a time so that one batch of states is held;
        # others read the whole prompt again with the answer and the rating cue appended.
        continues = hasattr(self.scorer, "continued_logprobs")
        step = max(1, getattr(self.scorer, "batch_size", b)) if continues else max(b, 1)
        choice = np.empty(b, np.int32)
        usable = np.empty(b, bool)
        rating = np.zeros(b, np.float32)
        rating_ok = np.ones(b, bool)
        for lo in range(0, b, step):
            sl = slice(lo, lo + step)
            logp = _renormalise(np.asarray(self.scorer.next_token_logprobs(
                personas[sl], suffixes[sl], ids, **({"keep": True} if continues else {})), np.float64))
            usable[sl] = np.isfinite(logp).all(axis=1)
            option = _draw(np.where(usable[sl, None], logp, 0.0) / self.config.temperature, u[sl, 0])
            choice[sl] = np.where(option == k, -1, option)
            rows = np.flatnonzero((choice[sl] >= 0) & usable[sl])
            if len(rows):
                after = [rating_suffix(labels[c]) for c in choice[sl][rows]]
                rating[lo + rows], rating_ok[lo + rows] = self._ratings(
                    [personas[lo + r] for r in rows], [suffixes[lo + r] for r in rows], after,
                    u[lo + rows, 1], rows if continues else None)
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
        if self.config.feedback_tokens:
            self.last_feedback = self.feedback(world, users, slates, out.choice)
            self.last_feedback_users = users.copy()
        return out

    def feedback(self, world: "World", users: np.ndarray, slates: np.ndarray, choice: np.ndarray,
                 max_new_tokens: int | None = None) -> list[str]:
        """Each user's free-text reason for ``choice`` (slate position, -1 for none), one string per user.

        The model reads the decision prompt as it was, its answer letter ("none" letter for -1), and
        ``FEEDBACK_CUE``, and continues greedily for ``max_new_tokens`` tokens (default: the config's
        ``feedback_tokens``, or ``FEEDBACK_TOKENS`` when per-step feedback is off). Call it before the
        step's responses are applied, so the prompt shows the state the user decided in.
        """
        users = np.asarray(users, np.int64)
        slates = np.asarray(slates)
        k = slates.shape[1]
        labels = option_labels(k)
        prompts = build_prompts(world, users, slates, self.config.prompt, social=world.social.num_edges > 0)
        texts = [prompts.full(b) + f" {labels[c if c >= 0 else k]}{FEEDBACK_CUE}"
                 for b, c in enumerate(np.asarray(choice))]
        return self.scorer.generate(texts, max_new_tokens or self.config.feedback_tokens or FEEDBACK_TOKENS)

    def _ratings(self, personas: list[str], suffixes: list[str], answers: list[str], draws: np.ndarray,
                 kept_rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Ratings 1-5 drawn from the model's digit probabilities once it has given ``answers`` (the
        chosen letter and the rating cue) to its prompts; also whether each row was usable.
        ``kept_rows``: the rows of the backend's last (kept) call to continue, instead of re-reading."""
        if self._rating_answer is None:
            self._rating_answer = self.scorer.answer_tokens(RATING_CUE, RATINGS)
        end, ids = self._rating_answer
        tail = end[len(RATING_CUE):]
        if kept_rows is not None:
            raw = self.scorer.continued_logprobs(kept_rows, [a + tail for a in answers], ids)
        else:
            raw = self.scorer.next_token_logprobs(personas, [s + a + tail for s, a in zip(suffixes, answers)], ids)
        logp = _renormalise(np.asarray(raw, np.float64))
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

