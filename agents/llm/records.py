"""Slate decisions as a user LM reads them: the training data of ``recsim-llm train-user-lm``.

A decision is a prompt (persona, state, lettered options, exactly as ``LLMUser`` builds it), the
option taken (a slate position, or "none of these") and the rating given. Two sources:

- **simulator logs**: ``RecordingUser`` wraps any user model (the embedded choice model by
  default) and writes down each decision with the prompt of the state the user was in, so a
  user LM can learn to imitate it, "none" answers and all;
- **logged data** (MovieLens format): ``logged_decisions`` replays each logged choice at its
  decision point (``simenv.datasets.replay.prefix_world``) and shows the chosen item among
  ``slate_size - 1`` items the user never interacted with. Logs record no skips, so "none" is
  never the answer there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.base import Responses
from agents.llm.prompts import PromptConfig, build_prompts

if TYPE_CHECKING:
    from simenv.datasets import Interactions, WorldData
    from simenv.datasets.replay import DecisionPoints
    from simenv.world import World


@dataclass
class Decisions:
    """n logged slate decisions, all over slates of the same size k.

    Attributes:
        persona: n persona prompt parts (the cacheable prefix).
        context: n state + question parts (ending with the answer cue).
        choice: (n,) int64 option taken: a slate position 0..k-1, or k for "none of these".
        rating: (n,) float32 rating 1..5 of the taken item; 0 for "none".
        slate_size: k.
    """

    persona: list[str]
    context: list[str]
    choice: np.ndarray
    rating: np.ndarray
    slate_size: int

    def __post_init__(self) -> None:
        n = len(self.persona)
        if len(self.context) != n or self.choice.shape != (n,) or self.rating.shape != (n,):
            raise ValueError(f"Decisions: persona, context, choice and rating must all have length {n}.")
        if n and (self.choice.min() < 0 or self.choice.max() > self.slate_size):
            raise ValueError(f"Decisions.choice: options are 0..{self.slate_size} (the last is 'none of these').")
        clicked = self.choice < self.slate_size
        if np.any((self.rating[clicked] < 1) | (self.rating[clicked] > 5)):
            raise ValueError("Decisions.rating: a taken item needs a rating in 1..5.")

    def __len__(self) -> int:
        return len(self.persona)

    def take(self, rows: np.ndarray) -> "Decisions":
        return Decisions([self.persona[r] for r in rows], [self.context[r] for r in rows], self.choice[rows],
                         self.rating[rows], self.slate_size)

    def split(self, share: float, seed: int = 0) -> tuple["Decisions", "Decisions"]:
        """(the rest, a random ``share`` held out)."""
        perm = np.random.default_rng(seed).permutation(len(self))
        cut = len(self) - int(round(share * len(self)))
        return self.take(np.sort(perm[:cut])), self.take(np.sort(perm[cut:]))

    @classmethod
    def concat(cls, parts: list["Decisions"]) -> "Decisions":
        sizes = {p.slate_size for p in parts}
        if len(sizes) != 1:
            raise ValueError(f"Decisions.concat: slates of different sizes {sorted(sizes)}.")
        return cls([x for p in parts for x in p.persona], [x for p in parts for x in p.context],
                   np.concatenate([p.choice for p in parts]), np.concatenate([p.rating for p in parts]),
                   sizes.pop())


class RecordingUser:
    """A user model that answers through ``inner`` and records each decision with its prompt.

    Use it as ``user_model=RecordingUser()`` in ``gym.make_vec``; ``decisions()`` returns what was
    recorded. Prompts are built before the dynamics apply the answer, from the same state the
    inner model decided in.
    """

    def __init__(self, inner: Any = None, prompt: PromptConfig | None = None) -> None:
        from agents.choice import MultinomialLogitUser

        self.inner = inner if inner is not None else MultinomialLogitUser()
        self.prompt = prompt or PromptConfig()
        self.trusted = getattr(self.inner, "trusted", False)
        self._parts: list[Decisions] = []

    def respond(self, world: "World", users: np.ndarray, slates: np.ndarray) -> Responses:
        p = build_prompts(world, users, slates, self.prompt, social=world.social.num_edges > 0)
        out = self.inner.respond(world, users, slates)
        k = slates.shape[1]
        self._parts.append(Decisions(p.persona, [s + q for s, q in zip(p.state, p.question)],
                                     np.where(out.choice < 0, k, out.choice).astype(np.int64),
                                     np.asarray(out.rating, np.float32).copy(), k))
        return out

    def decisions(self) -> Decisions:
        if not self._parts:
            raise ValueError("RecordingUser: nothing recorded yet; step an env that uses it first.")
        return Decisions.concat(self._parts)


def logged_decisions(data: "WorldData", history: "Interactions", points: "DecisionPoints", slate_size: int,
                     prompt: PromptConfig | None = None, seed: int = 0,
                     seen: "Interactions | None" = None) -> tuple[Decisions, np.ndarray]:
    """The logged choices ``points`` as decisions over slates of ``slate_size`` (the chosen item among
    items the user never interacted with in ``seen``, default ``history``), with the state read from
    ``history`` up to each point. Also returns the (n, k) slates of item ids."""
    from simenv.datasets.replay import prefix_world, sample_candidates

    world = prefix_world(data, history, points, seed=seed)
    slates, column = sample_candidates(seen if seen is not None else history, points, data.catalog.num_items,
                                       slate_size, seed=seed)
    p = build_prompts(world, np.arange(len(points)), slates, prompt or PromptConfig(), social=False)
    return Decisions(p.persona, [s + q for s, q in zip(p.state, p.question)], column,
                     points.rating.astype(np.float32), slate_size), slates


def simulated_decisions(env_kwargs: dict, policy: str = "random", steps: int = 20, seed: int = 0
                        ) -> tuple[Decisions, "World"]:
    """Decisions of the embedded choice model in a vector env of ``env_kwargs`` (one slot per user),
    served by the named baseline policy for ``steps`` steps; also returns the world at time zero."""
    import gymnasium as gym

    import simenv  # noqa: F401
    from policies import evaluate, make_policy

    recorder = RecordingUser()
    kwargs = {**env_kwargs, "user_model": recorder, "audit": False}
    env = gym.make_vec("RecSim-LLM-v0", num_envs=kwargs.get("num_users", 1000),
                       vectorization_mode="vector_entry_point", **kwargs)
    world = env.unwrapped.sim.initial_world
    evaluate(make_policy(policy), env, steps=steps, seed=seed)
    return recorder.decisions(), world


def movielens_decisions(path: str, per_user: int = 10, slate_size: int = 20, min_history: int = 5,
                        prompt: PromptConfig | None = None, seed: int = 0, **load_kwargs: Any
                        ) -> tuple[Decisions, "WorldData"]:
    """Training decisions from a MovieLens-format folder: up to ``per_user`` logged choices of each
    user, never their last one (``leave_last_out`` keeps it for evaluation), each among
    ``slate_size - 1`` items the user never rated."""
    from simenv.datasets import load_movielens
    from simenv.datasets.replay import decision_points, leave_last_out

    data = load_movielens(path, **load_kwargs)
    train, _ = leave_last_out(data.interactions, data.num_users, min_history)
    points = decision_points(train, data.num_users, per_user, min_history, seed)
    decisions, _ = logged_decisions(data, train, points, slate_size, prompt, seed, seen=data.interactions)
    return decisions, data
