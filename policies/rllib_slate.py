"""A slate policy for RLlib's new API stack on ``RecSim-LLM-v0``: PPO that never shows an item twice.

RLlib's default distribution for the env's ``MultiDiscrete`` slate action samples each position
independently, so it repeats candidates, which the env rejects. ``SlateRLModule`` instead scores every
candidate and draws the slate from a Plackett-Luce distribution (``PlackettLuceSlate``): position by
position without replacement, so the k slots are always distinct. ``ppo_config`` wires it to the
registered vector env, which RLlib drives directly (``gym_env_vectorize_mode="vector_entry_point"``),
and ``build_algo`` builds it without writing to ``~/ray_results``.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.distribution import Distribution
from ray.rllib.core.distribution.torch.torch_distribution import TorchDeterministic
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

# the module-qualified id imports simenv (and so registers the env) in every Ray worker process
ENV_ID = "simenv:RecSim-LLM-v0"


class PlackettLuceSlate(Distribution):
    """Ordered slates of ``slate_size`` distinct candidates, drawn without replacement from scores.

    With scores s (..., C), the slate a = (a_1, ..., a_k) has probability

        P(a) = prod_{j=1..k} exp(s_{a_j}) / sum_{c not in {a_1..a_{j-1}}} exp(s_c),

    so ``logp`` is the exact sum of the k sequential masked log-softmaxes. ``sample`` is the
    Gumbel-top-k trick: the k largest of s_c + Gumbel noise, in decreasing order, are an exact draw.
    ``to_deterministic`` is the top-k of the scores, best first.

    The entropy and the KL divergence of a whole slate sum over C! / (C - k)! ordered slates, so they
    are computed by the chain rule along one prefix, the greedy (top-k) one:
    H ~ sum_j H(p(. | top_1..top_{j-1})), KL ~ sum_j KL(p_j || q_j) on that prefix. Both are exact for
    k = 1, for uniform scores (every prefix is alike by symmetry) and in the limit of a peaked policy
    (where the greedy prefix is the slate), which is what PPO's entropy bonus and KL penalty need.
    """

    def __init__(self, logits: torch.Tensor, slate_size: int) -> None:
        """``logits``: (..., C) float scores; ``slate_size``: k <= C positions to fill."""
        super().__init__()
        if not 1 <= slate_size <= logits.shape[-1]:
            raise ValueError(f"slate_size={slate_size}: must be in 1..{logits.shape[-1]} (the number of candidates).")
        self.logits = logits
        self.slate_size = slate_size

    @classmethod
    def from_logits(cls, logits: torch.Tensor, slate_size: int, **kwargs: Any) -> "PlackettLuceSlate":
        return cls(logits, slate_size)

    @staticmethod
    def required_input_dim(space: gym.Space, **kwargs: Any) -> int:
        """One score per candidate: C for a ``MultiDiscrete([C] * k)`` slate space."""
        return int(np.asarray(space.nvec).flat[0])

    def sample(self, *, sample_shape: tuple[int, ...] = (), **kwargs: Any) -> torch.Tensor:
        """(*sample_shape, ..., k) int64 candidate positions, distinct along the last axis."""
        shape = torch.Size(sample_shape) + self.logits.shape
        u = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
        tiny = torch.finfo(self.logits.dtype).tiny
        gumbel = -torch.log(-torch.log(u.clamp(min=tiny)))  # rand is in [0, 1): only 0 needs guarding
        return torch.topk(self.logits + gumbel, self.slate_size, dim=-1).indices

    def rsample(self, *, sample_shape: tuple[int, ...] = (), **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError("PlackettLuceSlate is discrete: there is no reparameterised sample.")

    def logp(self, value: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """(...,) exact log-probability of the ordered slates ``value`` (..., k); leading sample axes
        in ``value`` broadcast against the scores."""
        value = value.long()
        logits = self.logits.expand(*value.shape[:-1], self.logits.shape[-1])
        taken = _earlier_picks(value, logits.shape[-1])
        remaining = logits.unsqueeze(-2).masked_fill(taken, float("-inf"))  # (..., k, C)
        chosen = torch.gather(logits, -1, value)  # (..., k)
        return (chosen - torch.logsumexp(remaining, dim=-1)).sum(dim=-1)

    def entropy(self, **kwargs: Any) -> torch.Tensor:
        """(...,) chain-rule entropy along the greedy prefix (see the class docstring)."""
        log_p, taken = self._greedy_conditionals(self.logits, self.logits)
        return -(log_p.exp() * log_p.masked_fill(taken, 0.0)).sum(dim=(-2, -1))

    def kl(self, other: "PlackettLuceSlate", **kwargs: Any) -> torch.Tensor:
        """(...,) chain-rule KL(self || other) along self's greedy prefix (see the class docstring)."""
        log_p, taken = self._greedy_conditionals(self.logits, self.logits)
        log_q, _ = self._greedy_conditionals(other.logits, self.logits)
        return (log_p.exp() * (log_p - log_q).masked_fill(taken, 0.0)).sum(dim=(-2, -1))

    def to_deterministic(self) -> TorchDeterministic:
        return TorchDeterministic(loc=torch.topk(self.logits, self.slate_size, dim=-1).indices)

    def _greedy_conditionals(self, logits: torch.Tensor, prefix_of: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(c | the first j-1 picks), (..., k, C), of ``logits``, for the greedy picks of
        ``prefix_of`` (so that two distributions are compared on one prefix), and the (..., k, C) mask
        of candidates already picked, where log p is -inf (masked out before any product, so that
        no 0 * inf reaches the gradient)."""
        top = torch.topk(prefix_of.detach(), self.slate_size, dim=-1).indices  # (..., k)
        taken = _earlier_picks(top, logits.shape[-1])
        return torch.log_softmax(logits.unsqueeze(-2).masked_fill(taken, float("-inf")), dim=-1), taken


def _earlier_picks(slates: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """(..., k, C) bool: candidate c was picked at a position before j in ``slates`` (..., k) int64."""
    picked = torch.nn.functional.one_hot(slates, num_candidates)  # (..., k, C)
    return (picked.cumsum(dim=-2) - picked).bool()


class SlateRLModule(TorchRLModule, ValueFunctionAPI):
    """Scores the candidates of ``RecSim-LLM-v0``'s Dict observation and samples a slate of distinct ones.

    Input: the observation ``user`` (B, F), ``candidate_features`` (B, C, D), and ``candidates`` (B, C)
    with ``history`` (B, M), whose item ids give one more feature per candidate: whether the user has
    it in memory (showing remembered items bores users, and boredom costs patience). Each candidate's
    score is one MLP applied to [user features, that candidate's features, its in-memory flag], shared
    by all C candidates, so permuting the candidates permutes the scores alike (the slot order carries
    no meaning). The scores are the ``ACTION_DIST_INPUTS`` of ``PlackettLuceSlate``. The value head is
    an MLP of the user features and the candidates' mean features (invariant to the candidate order).

    ``model_config``: ``hidden_sizes`` (default ``(64, 64)``), the widths of both MLPs' hidden layers.
    The last score layer starts at zero, so the untrained policy is the uniformly random slate.
    """

    def setup(self) -> None:
        obs, act = self.observation_space, self.action_space
        if not isinstance(obs, gym.spaces.Dict) or "candidate_features" not in obs.spaces:
            raise ValueError(
                f"SlateRLModule needs RecSim-LLM-v0's Dict observation with 'candidate_features'; got {obs}. "
                "Keep candidate_features=True in env_config and add no observation-flattening connector."
            )
        num_candidates, feature_dim = obs["candidate_features"].shape
        if not isinstance(act, gym.spaces.MultiDiscrete) or np.any(act.nvec != num_candidates):
            raise ValueError(f"SlateRLModule needs a MultiDiscrete([{num_candidates}] * slate_size) action; got {act}.")
        in_dim = obs["user"].shape[0] + feature_dim + 1
        hidden = tuple(self.model_config.get("hidden_sizes", (64, 64)))
        self._score = _mlp(in_dim, hidden)
        nn.init.zeros_(self._score[-1].weight)
        nn.init.zeros_(self._score[-1].bias)
        self._value = _mlp(in_dim, hidden)
        self.action_dist_cls = PlackettLuceSlate.get_partial_dist_cls(slate_size=int(act.shape[0]))

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self._score(_candidate_inputs(batch[Columns.OBS])).squeeze(-1)}  # (B, C)

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """(B,) the value of each observation (``embeddings`` unused: the heads share no encoder)."""
        return self._value(_candidate_inputs(batch[Columns.OBS]).mean(dim=-2)).squeeze(-1)


def _candidate_inputs(obs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, C, F + D + 1): [user features, candidate features, candidate is in the user's memory]."""
    user, feats = obs["user"], obs["candidate_features"]  # (B, F), (B, C, D)
    remembered = (obs["candidates"].unsqueeze(-1) == obs["history"].unsqueeze(-2)).any(dim=-1)  # (B, C)
    return torch.cat([user.unsqueeze(-2).expand(*feats.shape[:-1], user.shape[-1]), feats,
                      remembered.unsqueeze(-1).to(feats.dtype)], dim=-1)


def _mlp(in_dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """in_dim -> hidden... (tanh) -> 1."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.Tanh()]
        in_dim = width
    layers.append(nn.Linear(in_dim, 1))
    return nn.Sequential(*layers)


def ppo_config(env_config: dict[str, Any], num_env_runners: int = 0, users_per_runner: int = 256, seed: int = 0,
               steps_per_user: int = 32, hidden_sizes: tuple[int, ...] = (64, 64), **training: Any) -> PPOConfig:
    """PPO with ``SlateRLModule`` on ``RecSim-LLM-v0``, through the env's registered vector entry point.

    Args:
        env_config: ``RecSim-LLM-v0`` keyword arguments, passed to each runner's vector env.
        num_env_runners: sampling actors (0: sample in the driver, the cheapest on a small machine).
        users_per_runner: vector env slots per runner (``num_envs_per_env_runner``); with
            ``num_users`` equal to it every user of a runner's world is served every step.
        seed: ``debugging(seed=...)``: runner i resets its env with ``seed + i`` (the local runner is 0).
        steps_per_user: env steps per slot per training batch (``rollout_fragment_length``), so a batch
            is ``steps_per_user * users_per_runner * max(num_env_runners, 1)`` user-steps.
        hidden_sizes: the module's MLP widths.
        training: ``PPOConfig.training`` arguments (``lr``, ``gamma``, ``num_epochs``, ...), over the
            defaults ``lr=1e-3``, ``num_epochs=4``, ``minibatch_size=min(1024, batch)``.
    """
    batch = steps_per_user * users_per_runner * max(num_env_runners, 1)
    training = {"lr": 1e-3, "num_epochs": 4, "minibatch_size": min(1024, batch), **training}
    return (
        PPOConfig()
        .environment(ENV_ID, env_config=dict(env_config))
        .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=users_per_runner,
                     gym_env_vectorize_mode="vector_entry_point", rollout_fragment_length=steps_per_user)
        .training(train_batch_size_per_learner=batch, **training)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=SlateRLModule,
                                               model_config={"hidden_sizes": tuple(hidden_sizes)}))
        .debugging(seed=seed)
    )


def build_algo(config: AlgorithmConfig, logdir: str | Path) -> Algorithm:
    """``config.build_algo()``, with the folder an Algorithm makes for itself outside Tune placed in
    ``logdir`` instead of ``~/ray_results``.

    Ray 2.60 has no argument for it: ``Trainable._setup_logdir`` creates a dated folder under the
    module constant ``ray.tune.trainable.trainable.DEFAULT_STORAGE_PATH``, which is pointed at
    ``logdir`` for the build and restored afterwards.
    """
    trainable = importlib.import_module("ray.tune.trainable.trainable")
    default = trainable.DEFAULT_STORAGE_PATH
    Path(logdir).mkdir(parents=True, exist_ok=True)
    trainable.DEFAULT_STORAGE_PATH = str(logdir)
    try:
        return config.build_algo()
    finally:
        trainable.DEFAULT_STORAGE_PATH = default
