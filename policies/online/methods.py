"""The ways a recommender keeps learning inside the simulator, each behind one small interface.

A ``Refiner`` says which policy serves the next round (``policy``) and learns from the decisions the
simulated users made in the round just served (``learn``). The loop (``policies.online.study``)
serves, measures, calls ``learn`` and swaps the policy when it changed. What a refiner learned is a
model folder on disk per round, so a resumed study finds the model of the next round by looking.

======================  ==================================================================================
kind                    what it does between rounds
======================  ==================================================================================
``frozen``              nothing: the offline-aligned model (SFT, then DPO) serves every round (the baseline)
``iterated_po``         SPRec-style self-play: the round's clicks become preference sets (chosen = taken;
                        rejected = shown and not taken, plus any offline sampler), trained with any loss of
                        ``policies.llm.losses`` from the current model, which is also the reference: each
                        round's model is the next round's reference. Optional RosePO-style ε from the
                        simulator's choice model (the utilities recorded at the decision)
``grpo``                trl ``GRPOTrainer`` on the round's served prompts; the reward asks the simulated user
                        about the generated title (its utility rank among the candidates at that decision,
                        in [0, 1]), with penalties for hallucinated and off-candidate titles; KL to the
                        starting policy (``grpo_beta``)
``icl``                 RecICL: no weight update; the in-context-tuned model reads each user's latest
                        ``demonstrations`` simulated decisions in its prompt (0: the same model without them)
``linucb``              the online LinUCB bandit of ``policies.linucb``, learning every step
``random``, ``popular``,  references that do not learn: the floor, the popularity baseline and the ceiling
``oracle``              (the user model's own utilities)
======================  ==================================================================================

A round without clicks trains nothing (status ``skipped``, with the reason). A training stage whose
logged loss turns NaN or infinite keeps the last good model, writes ``failed.json`` in the round's
folder, and the next round is served by the last good model (status ``failed``).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from policies.llm.pipeline import ModelConfig, NonFiniteLoss, StageConfig

KINDS = ("frozen", "iterated_po", "grpo", "icl", "linucb", "random", "popular", "oracle")
LLM_KINDS = ("frozen", "iterated_po", "grpo", "icl")


@dataclass
class MethodConfig:
    """One method of an online study (``kind``) and its knobs; fields a kind does not use are ignored."""

    name: str
    kind: Literal["frozen", "iterated_po", "grpo", "icl", "linucb", "random", "popular", "oracle"]
    # iterated_po
    loss: Literal["dpo", "cdpo", "sdpo", "dmpo", "simpo", "alpha_dpo"] = "dpo"
    negatives: dict[str, int] = field(default_factory=lambda: {"shown": 1})
    smoothing: Literal["none", "oracle"] = "none"
    eps_max: float = 0.4
    beta: float = 0.1
    gamma: float = 0.5
    alpha: float = 0.2
    sft_weight: float = 0.0
    train: StageConfig = field(default_factory=lambda: StageConfig(epochs=2, lr=5e-4, batch_size=16))
    # grpo
    grpo_beta: float = 0.04
    num_generations: int = 4
    max_prompts: int = 64
    hallucination_penalty: float = -1.0
    off_candidate_penalty: float = -0.5
    # icl
    demonstrations: int = 3

    def __post_init__(self) -> None:
        if not self.name.replace("-", "_").replace(" ", "_").isidentifier():
            raise ValueError(f"methods: name {self.name!r} names a folder; use letters, digits, spaces, - and _.")
        if self.kind == "iterated_po" and "self_hard" in self.negatives:
            raise ValueError(f"methods[{self.name!r}].negatives: 'self_hard' needs the model's scores of past "
                             "rounds; use shown, random, popular, similar or hallucinated.")


@dataclass
class Context:
    """What every refiner of one seed shares: the catalog, the offline models, how LLMs serve."""

    titles: list[str]
    popularity: np.ndarray
    embeddings: np.ndarray
    num_users: int
    model: ModelConfig
    frozen: Path  # the offline-aligned model (SFT then DPO)
    icl: Path | None  # the model tuned once on in-context prompts
    serve: dict[str, Any]  # LLMRecommenderPolicy arguments (mode, history, batch_size, max_new_tokens)
    seed: int


class Refiner:
    """Serves with a fixed policy and learns nothing; subclasses override ``policy`` and ``learn``."""

    def __init__(self, method: MethodConfig, ctx: Context, folder: Path) -> None:
        self.method, self.ctx, self.folder = method, ctx, folder

    def policy(self, round: int) -> tuple[str, dict[str, Any]]:
        kind = self.method.kind
        if kind == "frozen":
            return "llm", {**self.ctx.serve, "model": str(self.ctx.frozen)}
        if kind == "icl":
            return "llm_icl", {**self.ctx.serve, "model": str(self.ctx.icl),
                               "demonstrations": self.method.demonstrations}
        return kind, {}

    def learn(self, round: int, decisions: dict[str, np.ndarray], folder: Path) -> dict[str, Any]:
        return {"status": "none", "labelling_s": 0.0, "training_s": 0.0}


class TrainedRefiner(Refiner):
    """A refiner whose model changes between rounds: round r is served by the newest model a round
    before r trained successfully (``round_XX/model``), or by the offline-aligned model."""

    def model_for(self, round: int) -> Path:
        for r in range(round - 1, -1, -1):
            model = self.folder / f"round_{r:02d}" / "model"
            if (model / "config.json").exists():
                return model
        return self.ctx.frozen

    def policy(self, round: int) -> tuple[str, dict[str, Any]]:
        return "llm", {**self.ctx.serve, "model": str(self.model_for(round))}

    def learn(self, round: int, decisions: dict[str, np.ndarray], folder: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        dataset, reason = self.dataset(round, decisions)
        labelled = time.perf_counter()
        if dataset is None:
            return {"status": "skipped", "reason": reason, "labelling_s": labelled - t0, "training_s": 0.0}
        try:
            self.train(round, dataset, folder)
        except NonFiniteLoss as err:
            (folder / "failed.json").write_text(json.dumps({"error": str(err), "kept": str(self.model_for(round))}))
            return {"status": "failed", "reason": str(err), "labelling_s": labelled - t0,
                    "training_s": time.perf_counter() - labelled}
        return {"status": "trained", "examples": len(dataset), "labelling_s": labelled - t0,
                "training_s": time.perf_counter() - labelled}

    def dataset(self, round: int, decisions: dict[str, np.ndarray]):
        raise NotImplementedError

    def train(self, round: int, dataset: Any, folder: Path) -> Path:
        raise NotImplementedError


class IteratedPreference(TrainedRefiner):
    """On-policy preference optimization, one round of self-play at a time (see the module table)."""

    def dataset(self, round: int, decisions: dict[str, np.ndarray]):
        from policies.llm.preference_data import (examples_from_steps, mix_negatives, oracle_epsilon,
                                                  preference_dataset)

        ex = examples_from_steps(decisions["history"], decisions["candidates"], decisions["slate"],
                                 decisions["choice"], decisions["user"])
        if not len(ex):
            return None, f"round {round}: no simulated user clicked, so there is no chosen answer to learn from."
        m, ctx = self.method, self.ctx
        neg = mix_negatives(ex, m.negatives, titles=ctx.titles, popularity=ctx.popularity,
                            embeddings=ctx.embeddings, rng=[ctx.seed, round])
        eps = None
        if m.smoothing == "oracle":  # the user model's utilities at the decision, as recorded
            clicked = decisions["choice"] >= 0
            values, cands = decisions["values"][clicked], ex.candidates
            column = (cands[:, :, None] == np.maximum(neg.items, 0)[:, None, :]).argmax(axis=1)
            rejected = np.where(neg.items >= 0, np.take_along_axis(values, column, axis=1), np.nan)
            eps = oracle_epsilon(values[np.arange(len(ex)), ex.target], rejected, m.eps_max, rejected_items=neg.items)
        return preference_dataset(ex, neg, ctx.titles, eps), ""

    def train(self, round: int, dataset: Any, folder: Path) -> Path:
        from policies.llm.pipeline import preference_stage

        m = self.method
        return preference_stage(self.model_for(round), dataset, folder, m.train, self.ctx.seed * 1000 + round,
                                self.ctx.model, loss=m.loss, beta=m.beta, gamma=m.gamma, alpha=m.alpha,
                                sft_weight=m.sft_weight)


def utility_ranks(values: np.ndarray) -> np.ndarray:
    """(n, C) each candidate's utility rank within its row scaled to [0, 1] (1: the user's best)."""
    order = np.argsort(np.argsort(values, axis=1, kind="stable"), axis=1, kind="stable")
    return order / max(values.shape[1] - 1, 1)


class GRPORefiner(TrainedRefiner):
    """trl GRPO on the round's served prompts, rewarded by the simulated users (see the module table)."""

    def dataset(self, round: int, decisions: dict[str, np.ndarray]):
        from datasets import Dataset

        from policies.llm.prompts import display_title, recommendation_prompt

        n = len(decisions["user"])
        if not n:
            return None, f"round {round}: nobody was served."
        keep = np.sort(np.random.default_rng([self.ctx.seed, round, 7]).permutation(n)[: self.method.max_prompts])
        display = [display_title(str(t)) for t in self.ctx.titles]
        history, cands = decisions["history"][keep], decisions["candidates"][keep]
        prompts = [recommendation_prompt([display[j] for j in h[::-1] if j >= 0], [display[j] for j in c])
                   for h, c in zip(history, cands)]
        rank = utility_ranks(decisions["values"][keep])
        return Dataset.from_dict({"prompt": prompts, "candidate_items": cands.tolist(),
                                  "candidate_values": rank.tolist()}), ""

    def train(self, round: int, dataset: Any, folder: Path) -> Path:
        from policies.llm.pipeline import grpo_stage
        from policies.llm.rewards import SimulatedUserReward

        m = self.method
        reward = SimulatedUserReward(self.ctx.titles, hallucination_penalty=m.hallucination_penalty,
                                     off_candidate_penalty=m.off_candidate_penalty)
        model = grpo_stage(self.model_for(round), dataset, reward, folder, m.train, self.ctx.seed * 1000 + round,
                           self.ctx.model, beta=m.grpo_beta, num_generations=m.num_generations,
                           max_completion_length=int(self.ctx.serve.get("max_new_tokens", 16)))
        (folder / "reward_counts.json").write_text(json.dumps(reward.counts))
        return model


def make_refiner(method: MethodConfig, ctx: Context, folder: Path) -> Refiner:
    if method.kind == "iterated_po":
        return IteratedPreference(method, ctx, folder)
    if method.kind == "grpo":
        return GRPORefiner(method, ctx, folder)
    return Refiner(method, ctx, folder)


def finite(x: float) -> float | None:
    """JSON-safe: NaN as null."""
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)
