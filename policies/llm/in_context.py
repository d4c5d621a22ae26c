"""In-context refinement of an LLM recommender (RecICL, arXiv 2410.23136): no weight update while
serving; the user's latest interactions are placed in the prompt as demonstrations.

A demonstration is one earlier decision of the same user: what was shown and what was taken,

    Shown: A; B; C; D; E. Chosen: C.

The model is tuned once (SFT) on prompts in this format, demonstrations drawn from the same user's
earlier logged decisions, so it learns to read them; at serving time ``InContextLLMPolicy`` keeps,
for every user, the last ``demonstrations`` decisions the simulated user made in front of it and
writes them before the LLaRA prompt. When interests shift, the prompt follows the user's newest
choices at once, while the weights stay those of the offline tuning. With ``demonstrations=0``
the same model and prompt without demonstrations is the comparison the RecICL paper makes.

The memory is a batched ring per user: (U, D, k) shown item ids and (U, D) chosen ids, -1 empty,
newest last, updated for all clicking users at once.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from policies.llm.prompts import SEPARATOR, display_title, prompts_from_ids
from policies.llm.recommender import LLMRecommenderPolicy


def demonstration(shown: Sequence[str], chosen: str) -> str:
    return f"Shown: {SEPARATOR.join(shown)}. Chosen: {chosen}."


def in_context_prompt(demos: Sequence[tuple[Sequence[str], str]], prompt: str) -> str:
    """``prompt`` (the LLaRA prompt) preceded by the user's demonstrations, oldest first (none: unchanged)."""
    lead = " ".join(demonstration(s, c) for s, c in demos)
    return (lead + "\n" if lead else "") + prompt


def demo_memory(users: np.ndarray, slates: np.ndarray, chosen: np.ndarray, num_users: int,
                demonstrations: int) -> tuple[np.ndarray, np.ndarray]:
    """Each decision's demonstrations: the same user's previous ``demonstrations`` decisions.

    Args:
        users: (n,) user of each decision, in time order.
        slates: (n, k) item ids shown; chosen: (n,) item id taken.
    Returns:
        (n, D, k) shown ids and (n, D) chosen ids of the demonstrations, -1 empty, newest last.
    """
    n, k = slates.shape
    ring_shown = np.full((num_users, demonstrations, k), -1, np.int64)
    ring_chosen = np.full((num_users, demonstrations), -1, np.int64)
    out_shown = np.empty((n, demonstrations, k), np.int64)
    out_chosen = np.empty((n, demonstrations), np.int64)
    for i in range(n):  # offline data preparation, once: the ring depends on each user's order
        u = users[i]
        out_shown[i], out_chosen[i] = ring_shown[u], ring_chosen[u]
        if demonstrations:
            ring_shown[u] = np.roll(ring_shown[u], -1, axis=0)
            ring_chosen[u] = np.roll(ring_chosen[u], -1)
            ring_shown[u, -1], ring_chosen[u, -1] = slates[i], chosen[i]
    return out_shown, out_chosen


def demo_texts(shown: np.ndarray, chosen: np.ndarray, display: Sequence[str]) -> list[list[tuple[list[str], str]]]:
    """(n, D, k) / (n, D) item ids -> per row, the filled demonstrations as (shown titles, chosen title)."""
    return [[([display[j] for j in s], display[c]) for s, c in zip(row_s, row_c) if c >= 0]
            for row_s, row_c in zip(shown, chosen)]


def icl_sft_dataset(examples, slates: np.ndarray, titles: Sequence[str], num_users: int, demonstrations: int):
    """prompt/completion rows in the in-context format from time-ordered click decisions.

    Args:
        examples: ``RecExamples`` of the clicks (``examples_from_steps``), in time order.
        slates: (n, k) item ids shown at each of those decisions.
    """
    from datasets import Dataset

    from policies.llm.prompts import response

    display = [display_title(str(t)) for t in titles]
    chosen = examples.target_items
    shown, picked = demo_memory(examples.user, slates, chosen, num_users, demonstrations)
    prompts = [in_context_prompt(d, p) for d, p in zip(demo_texts(shown, picked, display),
                                                        prompts_from_ids(examples.history, examples.candidates, display))]
    return Dataset.from_dict({"prompt": prompts, "completion": [response(display[j]) for j in chosen]})


class InContextLLMPolicy(LLMRecommenderPolicy):
    """``LLMRecommenderPolicy`` whose prompt starts with each user's latest simulated decisions.

    Args:
        demonstrations: decisions kept per user and shown in the prompt (0: the plain prompt).
        (the rest as ``LLMRecommenderPolicy``)
    """

    name = "llm_icl"

    def __init__(self, model: Any, demonstrations: int = 3, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if demonstrations < 0:
            raise ValueError(f"demonstrations={demonstrations}: must be >= 0.")
        self.demonstrations = demonstrations

    def setup(self, env) -> None:
        super().setup(env)
        u, k = self.world.num_users, self.slate_size
        self.shown = np.full((u, self.demonstrations, k), -1, np.int64)
        self.chosen = np.full((u, self.demonstrations), -1, np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "shown": self.shown.copy(), "chosen": self.chosen.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.shown, self.chosen = state["shown"].copy(), state["chosen"].copy()

    def prompts(self, obs: dict[str, np.ndarray]) -> list[str]:
        users = self.env.sim.slot_user
        demos = demo_texts(self.shown[users], self.chosen[users], self.catalog_titles)
        return [in_context_prompt(d, p) for d, p in zip(demos, super().prompts(obs))]

    def update(self, obs, actions, rewards, info) -> None:
        """Remember every click of this step as its user's newest demonstration (all users at once)."""
        if not self.demonstrations:
            return
        hit = np.flatnonzero(info["clicked"] & info["_clicked"])
        users = info["user_id"][hit]
        self.shown[users] = np.roll(self.shown[users], -1, axis=1)
        self.chosen[users] = np.roll(self.chosen[users], -1, axis=1)
        self.shown[users, -1] = info["slate"][hit]
        self.chosen[users, -1] = info["item"][hit]
