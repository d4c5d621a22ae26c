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
``ppo``                 RLlib PPO with ``policies.rllib_slate.SlateRLModule``, a reference that is not an LLM:
                        it learns in a simulated twin of the world, kept in lockstep with the study's clock
                        (``PPORefiner``), and serves the greedy slates of its newest module
``random``, ``popular``,  references that do not learn: the floor, the popularity baseline and the ceiling
``oracle``              (the user model's own utilities)
======================  ==================================================================================

A refiner may prepare before round 0 is served (``start``: PPO trains in its twin over the logging
phase). A round without clicks trains nothing (status ``skipped``, with the reason). A training
stage whose logged loss turns NaN or infinite keeps the last good model, writes ``failed.json`` in
the round's folder, and the next round is served by the last good model (status ``failed``).
"""
from __future__ import annotations

import json
import math
import pickle
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from policies.llm.pipeline import ModelConfig, NonFiniteLoss, StageConfig

KINDS = ("frozen", "iterated_po", "grpo", "icl", "linucb", "ppo", "random", "popular", "oracle")
LLM_KINDS = ("frozen", "iterated_po", "grpo", "icl")


@dataclass
class MethodConfig:
    """One method of an online study (``kind``) and its knobs; fields a kind does not use are ignored."""

    name: str
    kind: Literal["frozen", "iterated_po", "grpo", "icl", "linucb", "ppo", "random", "popular", "oracle"]
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
    # ppo
    ppo_lr: float = 1e-3
    ppo_epochs: int = 4  # passes over each training batch (users x steps)
    ppo_gamma: float = 0.9
    ppo_minibatch_size: int = 1024  # capped at the batch

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
    frozen: Path | None  # the offline-aligned model (SFT then DPO); None in a study without LLM methods
    icl: Path | None  # the model tuned once on in-context prompts
    serve: dict[str, Any]  # LLMRecommenderPolicy arguments (mode, history, batch_size, max_new_tokens)
    seed: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # the world's RecSim-LLM-v0 arguments (PPO's twin)
    log_steps: int = 0  # ticks of the logging phase: round 0 starts at this clock
    steps_per_round: int = 0


class Refiner:
    """Serves with a fixed policy and learns nothing; subclasses override ``policy`` and ``learn``."""

    def __init__(self, method: MethodConfig, ctx: Context, folder: Path) -> None:
        self.method, self.ctx, self.folder = method, ctx, Path(folder)

    def start(self) -> None:
        """Before round 0 is served; run on every start and resume of the method, so it skips what is done."""

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
            return self.failed(round, err, folder, labelled - t0, time.perf_counter() - labelled)
        return {"status": "trained", "examples": len(dataset), "labelling_s": labelled - t0,
                "training_s": time.perf_counter() - labelled}

    def failed(self, round: int, err: NonFiniteLoss, folder: Path, labelling_s: float,
               training_s: float) -> dict[str, Any]:
        """Keeps the last good model: says so in ``failed.json`` and in what ``learn`` returns."""
        (folder / "failed.json").write_text(json.dumps({"error": str(err), "kept": str(self.model_for(round))}))
        return {"status": "failed", "reason": str(err), "labelling_s": labelling_s, "training_s": training_s}

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

        from policies.llm.prompts import display_title, prompts_from_ids

        n = len(decisions["user"])
        if not n:
            return None, f"round {round}: nobody was served."
        keep = np.sort(np.random.default_rng([self.ctx.seed, round, 7]).permutation(n)[: self.method.max_prompts])
        display = [display_title(str(t)) for t in self.ctx.titles]
        cands = decisions["candidates"][keep]
        prompts = prompts_from_ids(decisions["history"][keep][:, ::-1], cands, display)  # env order: newest first
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


class PPORefiner(TrainedRefiner):
    """RLlib PPO with ``SlateRLModule``, trained in a twin of the study's world (see the module table).

    PPO learns from its own on-policy samples, not from decisions another policy logged, so it learns
    in a twin world: the study's world config (``Context.env_kwargs``: the same world seed, the same
    scheduled shift and new items) driven by RLlib's own env runner (``policies.online.twin``) in
    lockstep with the study's clock. Before round 0 (``start``) it trains from the world's start over
    the logging phase's ticks (``pretrain/``); after round r it trains until its twin's clock reaches
    the study's clock at the end of round r, so the twin passes the shift at the study's tick. A
    phase is one ``algo.train()`` on a batch of users x steps, saved in the phase's folder: the
    algorithm (``ppo/``), the module (``module/``) and the twin (``twin.pkl``). Round r is served by
    the newest module of a phase before it, greedily (``policies.rllib_serve``).

    Caveat: PPO learns from a simulated twin of the served users, not from the served users' own
    responses. The twin's users are the served users at the world's start and meet the same shift at
    the same tick, but they have seen PPO's exploring slates rather than the logging policy's and the
    served ones, so their states drift apart: this is what an RL recommender with a simulator of its
    users at hand would learn, a reference beside the methods that learn from the round's decisions.

    Every phase builds the algorithm anew from the previous phase's checkpoint
    (``Algorithm.restore_from_path``; the twin restarts from its ``twin.pkl``), seeded by (seed,
    round) through RLlib's ``debugging(seed=...)``, which also seeds this process's global random,
    NumPy and torch generators. A phase of an uninterrupted study and of a resumed one is therefore
    the same computation, bit for bit: nothing is carried in memory from one phase to the next. What
    RLlib 2.60 makes of that:

    - its checkpoint leaves out PPO's adaptive KL coefficient (``PPOLearner.curr_kl_coeffs_per_module``
      is not in ``Learner.get_state``), so it would restart at ``kl_coeff`` every phase and never adapt:
      the refiner uses the clipped surrogate alone (``use_kl_loss=False``);
    - its runner counts a batch in served user-steps, and a slot whose user left is not served on the
      next tick (the env's autoreset), so a phase in which users leave takes extra ticks. The next
      phase trains that many fewer (none when the twin is a whole round ahead: ``skipped``);
      ``learn.json`` has the twin's clock (``twin_clock``) beside the study's (``clock``);
    - each phase starts new RLlib episodes at the twin's saved state, so a slot whose user left at a
      phase's last tick is, at the next phase's first tick, a step of reward 0 whose slate was ignored.
    """

    def start(self) -> None:
        """Pretraining over the logging phase's ticks, from the world's start; its module serves round 0."""
        folder = self.folder / "pretrain"
        if (folder / "learn.json").exists():
            return
        t0 = time.perf_counter()
        # seeded by the study's episode seed, which RLlib's runner resets the twin with: the study's world at clock 0
        out = self._phase(folder, None, self.ctx.log_steps, self.ctx.seed)
        (folder / "learn.json").write_text(json.dumps({**out, "training_s": time.perf_counter() - t0}))

    def model_for(self, round: int) -> Path:
        return self._newest(round, "module") / "module"

    def policy(self, round: int) -> tuple[str, dict[str, Any]]:
        return "rllib_slate", {"module": str(self.model_for(round))}

    def learn(self, round: int, decisions: dict[str, np.ndarray], folder: Path) -> dict[str, Any]:
        """Trains in the twin over round ``round``'s ticks; ``decisions`` are not PPO's data (see above)."""
        ctx, t0 = self.ctx, time.perf_counter()
        clock = ctx.log_steps + (round + 1) * ctx.steps_per_round
        try:
            out = self._phase(folder, round, clock, ctx.seed * 1000 + round + 1)
        except NonFiniteLoss as err:
            return self.failed(round, err, folder, 0.0, time.perf_counter() - t0)
        return {**out, "labelling_s": 0.0, "training_s": time.perf_counter() - t0}

    def _newest(self, round: int, name: str) -> Path:
        """The folder of the newest phase before round ``round`` that wrote ``name``."""
        for r in range(round - 1, -1, -1):
            if (self.folder / f"round_{r:02d}" / name).exists():
                return self.folder / f"round_{r:02d}"
        return self.folder / "pretrain"

    def _phase(self, folder: Path, round: int | None, clock: int, seed: int) -> dict[str, Any]:
        """PPO in the twin from where the phases before round ``round`` left it (None: from the world's
        start, untrained) until the twin's clock is ``clock``; writes ``folder``/{twin.pkl, ppo, module}.

        Raises ``NonFiniteLoss`` (after saving the twin, which moved on) when a loss is NaN or infinite.
        """
        from policies.online.twin import TwinVectorEnv
        from policies.rllib_slate import build_algo, ppo_config
        from simenv.experiment import init_ray

        m, ctx = self.method, self.ctx
        if not ctx.env_kwargs or ctx.log_steps < 1 or ctx.steps_per_round < 1:
            raise ValueError(f"methods[{m.name!r}]: kind 'ppo' needs Context.env_kwargs, log_steps and "
                             "steps_per_round (run_study fills them) to build its twin world.")
        start = None if round is None else self._newest(round, "twin.pkl") / "twin.pkl"
        now = 0 if start is None else int(pickle.loads(start.read_bytes())["clock"])
        steps = clock - now
        if steps < 1:
            return {"status": "skipped", "clock": clock, "twin_clock": now,
                    "reason": f"the twin is at tick {now}, past the study's {clock}: users who left took extra ticks."}
        for path in (folder / n for n in ("ppo", "module", "twin.pkl", "rllib", "failed.json")):  # a stopped try's
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        init_ray(None)  # RLlib would start a Ray of its own (with a dashboard) otherwise
        users = ctx.num_users
        env = {**ctx.env_kwargs, "audit": False, "candidate_features": True}
        config = ppo_config(env, users_per_runner=users, seed=seed, steps_per_user=steps, lr=m.ppo_lr,
                            num_epochs=m.ppo_epochs, gamma=m.ppo_gamma, use_kl_loss=False,
                            minibatch_size=min(m.ppo_minibatch_size, users * steps))
        config.environment(TwinVectorEnv, env_config={**env, "start": None if start is None else str(start)})
        algo = build_algo(config, folder / "rllib")
        try:
            if round is not None:
                algo.restore_from_path(self._newest(round, "ppo") / "ppo")
            result = algo.train()
            twin = algo.env_runner.env.unwrapped
            (folder / "twin.pkl").write_bytes(pickle.dumps(twin.state()))
            losses = result["learners"]["default_policy"]
            bad = [k for k in ("total_loss", "policy_loss", "vf_loss", "entropy") if not math.isfinite(losses[k])]
            if bad:
                raise NonFiniteLoss(f"PPO's {', '.join(bad)} turned non-finite (lower ppo_lr).")
            algo.save_to_path(folder / "ppo")
            algo.get_module().save_to_path(folder / "module")
        finally:
            algo.stop()
        return {"status": "trained", "examples": int(result["env_runners"]["num_env_steps_sampled"]),
                "clock": clock, "twin_clock": int(twin.world.clock), "total_loss": float(losses["total_loss"])}


def make_refiner(method: MethodConfig, ctx: Context, folder: Path) -> Refiner:
    if method.kind == "iterated_po":
        return IteratedPreference(method, ctx, folder)
    if method.kind == "grpo":
        return GRPORefiner(method, ctx, folder)
    if method.kind == "ppo":
        return PPORefiner(method, ctx, folder)
    return Refiner(method, ctx, folder)
