"""An LLM recommender acting in ``RecSim-LLM-v0``: a causal LM reads the user's recent titles and the
candidate titles (the LLaRA prompt, ``policies.llm.prompts``) and ranks or names candidates.

Two modes:

- ``"rank"`` (the fast mode used inside the simulator): each candidate is scored by the
  log-likelihood of its title as the answer, all candidates of a user in one pass over a prompt
  encoded once (``policies.llm.scoring``); the slate is the top ``slate_size``. Nothing can be
  hallucinated.
- ``"generate"`` (the LLaRA mode): the model writes a title, greedily. The title is grounded in the
  catalog (``simenv.audit.hallucination``); when it names one of the user's candidates that item
  leads the slate and the rest follows the likelihood ranking. When it names nothing, or an item
  outside the candidates, the emission is counted (hallucination / out-of-candidate, and the
  ValidRatio) and the slate is the likelihood ranking: a recommender must still show something,
  and the audit reports how often that happened.

Counts reach the audit (``env.sim.monitor.record_generations``) when the env audits, and are kept
in ``generation_counts`` either way. In ``"rank"`` mode, ``probe`` > 0 also has the model write a
title for that share of the served users each step, counted the same way but never shown: the
ValidRatio and hallucination rate of a model that serves by ranking.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.llm.local import LocalLM
from policies.base import BasePolicy
from policies.llm.prompts import display_title, prompts_from_ids, response
from policies.llm.scoring import pad_responses, response_logps
from simenv.audit.hallucination import TitleIndex, ground

MODES = ("rank", "generate")


class LLMRecommenderPolicy(BasePolicy):
    """Ranks (or names) candidates with a local causal LM.

    Args:
        model: a local Hugging Face model folder, or a loaded model (then pass ``tokenizer``).
        tokenizer: the model's tokenizer (loaded from ``model`` when it is a folder).
        mode: ``"rank"`` or ``"generate"`` (see the module docstring).
        history: how many recent titles the prompt lists.
        batch_size: prompts per forward pass (each with all its candidates).
        max_new_tokens: the longest title ``"generate"`` writes.
        device: ``"cuda"`` when a GPU is present, else ``"cpu"`` (bf16 on a GPU).
        probe: in ``"rank"`` mode, the share of served users whose generated title is counted (not shown).
    """

    name = "llm"

    def __init__(self, model: Any, tokenizer: Any = None, mode: str = "rank", history: int = 10,
                 batch_size: int = 16, max_new_tokens: int = 24, device: str | None = None, seed: int = 0,
                 probe: float = 0.0) -> None:
        super().__init__(seed)
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: use one of {MODES}.")
        if not 0.0 <= probe <= 1.0:
            raise ValueError(f"probe={probe}: a share of served users, in [0, 1].")
        self.probe = probe
        if history < 0:
            raise ValueError(f"history={history}: must be >= 0.")
        if isinstance(model, (str, Path)):
            model = str(model)
        self.lm = LocalLM(model, tokenizer, device=device, batch_size=batch_size, prefix_cache=0)
        self.mode = mode
        self.history = history
        self.max_new_tokens = max_new_tokens
        self.generation_counts: dict[str, int] = {}
        self.last_answers: list[str] = []

    def setup(self, env) -> None:
        super().setup(env)
        self.use_catalog(self.world.catalog.titles)

    def state_dict(self) -> dict[str, Any]:
        """The weights are fixed while serving: a checkpoint keeps the counts and the probe's generator."""
        return {"generation_counts": dict(self.generation_counts), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generation_counts = dict(state["generation_counts"])
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]

    def use_catalog(self, titles) -> None:
        """Read titles of this catalog (``setup`` does it from the env; offline evaluation directly)."""
        self.catalog_titles = [display_title(t) for t in titles]
        self.index = TitleIndex(self.catalog_titles)
        tok = self.lm.tokenizer
        ids = tok([response(t) for t in self.catalog_titles], add_special_tokens=False)["input_ids"]
        self.response_ids = [list(x) + [tok.eos_token_id] for x in ids]  # per item, the answer's tokens

    def prompts(self, obs: dict[str, np.ndarray]) -> list[str]:
        """The LLaRA prompt of each served user: recent titles oldest first, then the candidates."""
        hist = np.asarray(obs["history"])[:, : self.history]  # most recent first, -1 padded
        return prompts_from_ids(hist[:, ::-1], obs["candidates"], self.catalog_titles)

    @torch.no_grad()
    def scores(self, obs: dict[str, np.ndarray], prompts: list[str] | None = None) -> np.ndarray:
        """(N, C) log-likelihood of each candidate's title as the answer to the user's prompt."""
        prompts = self.prompts(obs) if prompts is None else prompts
        cands = np.asarray(obs["candidates"])
        out = np.empty(cands.shape, np.float64)
        for start in range(0, len(prompts), self.lm.batch_size):
            sl = slice(start, start + self.lm.batch_size)
            batch = pad_responses(self.lm.tokenizer(prompts[sl])["input_ids"],
                                  [[self.response_ids[i] for i in row] for row in cands[sl]], self.lm.pad_id)
            out[sl] = response_logps(self.lm.model, batch.to(self.lm.device)).double().cpu().numpy()
        return out

    def act(self, obs):
        prompts = self.prompts(obs)
        scores = self.scores(obs, prompts)
        cands = np.asarray(obs["candidates"])
        if self.mode == "rank":
            if self.probe:
                rows = np.flatnonzero(self.rng.random(len(prompts)) < self.probe)
                if len(rows):
                    answers = self.lm.generate([prompts[i] for i in rows], self.max_new_tokens)
                    self._count(ground(self.index, [[a] for a in answers], cands[rows]))
            return self.slate_from_scores(scores)
        answers = self.lm.generate(prompts, self.max_new_tokens)
        self.last_answers = answers
        grounding = ground(self.index, [[a] for a in answers], cands)
        valid = self._count(grounding)
        monitor = getattr(getattr(self.env, "sim", None), "monitor", None)
        if monitor is not None:
            monitor.record_generations(grounding, valid)
        # a named candidate leads the slate: lift its score above every other
        named = grounding.in_candidates
        col = (cands == grounding.items[:, None]).argmax(axis=1)
        scores[np.flatnonzero(named), col[named]] = np.inf
        return self.slate_from_scores(scores)

    def _count(self, grounding) -> np.ndarray:
        """Add one step's emissions to ``generation_counts``; returns which named exactly one candidate."""
        valid = grounding.in_candidates  # exactly one candidate's title (see policies.llm.evaluate)
        for key, value in grounding.counts().items():
            self.generation_counts[key] = self.generation_counts.get(key, 0) + value
        self.generation_counts["answers"] = self.generation_counts.get("answers", 0) + len(valid)
        self.generation_counts["valid"] = self.generation_counts.get("valid", 0) + int(valid.sum())
        return valid
