"""The batched ``UserSimulator`` protocol and how a user model is named in a config.

A user simulator decides, for a batch of users each shown a slate, which slate position (if any)
each user takes and how they rate it. It does not change the user's state: the world applies the
same dynamics (drift, satiation, boredom, patience, memory) to whatever the simulator answers, so
the embedded choice model, a language model and your own model are interchangeable.

A complete custom simulator (a user who always takes the highest-quality item and rates it 5)::

    import numpy as np
    from agents import Responses

    class QualitySeeker:
        def respond(self, world, users, slates):
            quality = world.catalog.quality[slates]            # (B, k)
            choice = quality.argmax(axis=1).astype(np.int32)   # (B,)
            item = slates[np.arange(len(users)), choice]
            return Responses(
                choice=choice,
                rating=np.full(len(users), 5.0, np.float32),
                watch_time=world.catalog.duration[item].astype(np.float32),
            )

    env = gym.make("RecSim-LLM-v0", user_model=QualitySeeker())
    # or user_model="mypkg.users:QualitySeeker", or an entry point in the group "recsim_llm.user_models"

Randomness: use ``world.uniforms(users, n)`` (counter-based, reproducible per user whatever the
batching) rather than a global generator.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from simenv.world import World

ENTRY_POINT_GROUP = "recsim_llm.user_models"


@dataclass
class Responses:
    """What a batch of B users did with their slates.

    Attributes:
        choice: (B,) int32 slate position taken, or -1 for no click.
        rating: (B,) float32 in [1, 5] for a click, 0 where choice == -1.
        watch_time: (B,) float32 minutes spent on the taken item, 0 where choice == -1.
        fallback: (B,) bool, True where the answer came from a fallback model (e.g. an LLM's
            unusable output was replaced by the embedded choice model). Defaults to all False.
    """

    choice: np.ndarray
    rating: np.ndarray
    watch_time: np.ndarray
    fallback: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        b = len(self.choice)
        if self.fallback is None:
            self.fallback = np.zeros(b, bool)
        for name in ("rating", "watch_time", "fallback"):
            if np.shape(getattr(self, name)) != (b,):
                raise ValueError(f"Responses.{name}: shape {np.shape(getattr(self, name))}, expected ({b},).")

    def validate(self, slate_size: int) -> None:
        """Reject impossible answers from a (custom) simulator before they reach the state."""
        c = np.asarray(self.choice)
        if c.size and (c.min() < -1 or c.max() >= slate_size):
            raise ValueError(f"user model returned choice outside [-1, {slate_size - 1}]: {c.min()}..{c.max()}.")
        clicked = c >= 0
        r = np.asarray(self.rating)
        if not np.all(np.isfinite(r)) or np.any((r[clicked] < 1) | (r[clicked] > 5)):
            raise ValueError("user model returned a rating outside [1, 5] (or NaN) for a click.")
        w = np.asarray(self.watch_time)
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("user model returned a negative or non-finite watch_time.")


@runtime_checkable
class UserSimulator(Protocol):
    """Batched user decisions: ``respond(world, users (B,) int64, slates (B, k) int32 items) -> Responses``.

    Must not modify ``world``; must be a deterministic function of the world state (draw noise from
    ``world.uniforms``) so that runs replay exactly.
    """

    def respond(self, world: "World", users: np.ndarray, slates: np.ndarray) -> Responses: ...


def _builtin() -> dict[str, str]:
    return {
        "embedded": "agents.choice:MultinomialLogitUser",
        "mnl": "agents.choice:MultinomialLogitUser",
        "llm": "agents.llm.user:LLMUser",
    }


def resolve_user_model(spec: Any, **options: Any) -> UserSimulator:
    """Turn a config value into a user simulator.

    ``spec`` may be an object with ``respond``, a built-in name (``"embedded"``), an entry-point name
    in the ``recsim_llm.user_models`` group, or ``"package.module:Class"``. ``options`` go to the
    class constructor.
    """
    if spec is None:
        spec = "embedded"
    if not isinstance(spec, str):
        if isinstance(spec, type):
            spec = spec(**options)
        if not callable(getattr(spec, "respond", None)):
            raise TypeError(
                f"user_model: {type(spec).__name__} has no respond(world, users, slates) method; "
                "see agents.base.UserSimulator for the protocol."
            )
        return spec
    target = _builtin().get(spec)
    if target is None:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if found:
            return resolve_user_model(found[0].load(), **options)
    if target is None and ":" in spec:
        target = spec
    if target is None:
        names = sorted(set(_builtin()) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
        raise ValueError(
            f"user_model={spec!r} is not known. Use one of {names}, a 'package.module:Class' string, "
            f"an entry point in the group {ENTRY_POINT_GROUP!r}, or an object with a respond() method."
        )
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"user_model={spec!r}: cannot import {target!r} ({err}).") from err
    return resolve_user_model(cls, **options)
