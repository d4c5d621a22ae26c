"""What an LLM user reads: persona, a text view of the current interests, memory, what friends
liked, and the slate as lettered options. Built for a batch of users from the world's arrays.

A prompt has three parts, because they change at different rates:

- ``persona``: the instruction and who the user is. Fixed for a user, so a backend may encode it
  once and keep it (``LocalLM`` caches its key/value states);
- ``state``: interests, memory and friends' likes. It follows the dynamics, so it is rebuilt each
  step: the interest text names the genres and titles nearest to the user's interest vectors, so
  drift, satiation and social influence show up in what the model reads;
- ``question``: the slate's options and the answer cue. Option letters A, B, ... are the slate
  positions and the letter after the last one is "none of these".

The model answers with one letter (scored by the likelihood of each letter), and, after a click,
with a rating digit (``rating_cue``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from simenv.world import World

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ANSWER_CUE = "Your choice:"
RATING_CUE = "Your rating from 1 to 5:"
RATINGS = ("1", "2", "3", "4", "5")
INSTRUCTION = ("You are a member of a movie streaming service. Each time it shows you a few recommendations, "
               "you watch at most one of them, or none if nothing appeals to you.")


@dataclass(frozen=True)
class PromptConfig:
    """How much of the user's state the prompt shows."""

    interest_genres: int = 3  # genres named as the user's current taste
    interest_titles: int = 2  # titles named per interest vector (the heaviest two interests)
    memory_items: int = 5  # most recent items, with the user's own ratings
    neighbor_items: int = 3  # items friends recently rated 4 or 5 (when the graph has edges)
    show_genres: bool = True  # genres next to each option title

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, bool) and (not isinstance(value, int) or value < 0):
                raise ValueError(f"prompt.{name}={value!r}: must be a non-negative integer.")


def option_labels(slate_size: int) -> tuple[str, ...]:
    """Letters for the slate positions and, last, for "none of these"."""
    if slate_size + 1 > len(LETTERS):
        raise ValueError(f"slate_size={slate_size}: LLM users label options with letters, at most "
                         f"{len(LETTERS) - 1} per slate.")
    return tuple(LETTERS[: slate_size + 1])


@dataclass
class Prompts:
    """Texts of a batch of B users, part by part (see the module docstring)."""

    persona: list[str]
    state: list[str]
    question: list[str]

    def full(self, b: int) -> str:
        return self.persona[b] + self.state[b] + self.question[b]


def _genre_text(catalog, item: int) -> str:
    return ", ".join(g for g, on in zip(catalog.genre_names, catalog.genres[item]) if on)


def interest_summary(world: "World", users: np.ndarray, config: PromptConfig) -> list[str]:
    """Per user, the genres and titles nearest to the current interest vectors (batched matmuls)."""
    c, p = world.catalog, world.population
    x = p.interests[users].astype(np.float32)  # (B, K, d)
    w = p.weights[users].astype(np.float32)  # (B, K)
    genre_mean = (c.genres.T.astype(np.float32) @ c.embeddings) / np.maximum(c.genres.sum(axis=0), 1)[:, None]
    genre_score = np.einsum("bk,bkg->bg", w, x @ genre_mean.T)  # interest-weighted affinity per genre
    n_g = min(config.interest_genres, genre_score.shape[1])
    top_genres = np.argsort(-genre_score, axis=1, kind="stable")[:, :n_g]
    heavy = np.argsort(-w, axis=1, kind="stable")[:, :2]  # the two heaviest interests
    n_t = min(config.interest_titles, c.num_items)
    titles = np.empty((len(users), heavy.shape[1], n_t), np.int64)
    for j in range(heavy.shape[1]):
        v = x[np.arange(len(users)), heavy[:, j]]  # (B, d)
        scores = v @ c.embeddings.T  # (B, I)
        part = np.argpartition(-scores, n_t - 1, axis=1)[:, :n_t] if n_t < c.num_items else \
            np.tile(np.arange(c.num_items), (len(users), 1))
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        titles[:, j] = np.take_along_axis(part, order, axis=1)
    out = []
    for b in range(len(users)):
        genres = ", ".join(c.genre_names[g] for g in top_genres[b])
        named = list(dict.fromkeys(c.titles[i] for i in titles[b].ravel()))
        text = f"These days you are into {genres}" if genres else "These days your taste is open"
        out.append(text + (f", things like {'; '.join(named)}.\n" if named else ".\n"))
    return out


def memory_text(world: "World", users: np.ndarray, config: PromptConfig) -> list[str]:
    """Per user, the most recent items with the user's own ratings, newest first."""
    p, c = world.population, world.catalog
    m = p.memory_size
    pos = p.memory_pos[users]
    order = (pos[:, None] - 1 - np.arange(m)[None, :]) % m
    items = np.take_along_axis(p.memory_items[users], order, axis=1)[:, : config.memory_items]
    ratings = np.take_along_axis(p.memory_ratings[users], order, axis=1)[:, : config.memory_items]
    filled = np.arange(items.shape[1])[None, :] < np.minimum(pos, m)[:, None]
    out = []
    for b in range(len(users)):
        seen = [f"{c.titles[i]} ({r:.0f}/5)" for i, r, f in zip(items[b], ratings[b], filled[b]) if f]
        out.append(("You recently watched: " + "; ".join(seen) + ".\n") if seen else
                   "You have not watched anything here yet.\n")
    return out


def neighbor_text(world: "World", users: np.ndarray, config: PromptConfig) -> list[str]:
    """Per user, the latest items friends rated 4 or 5 (one per friend, up to ``neighbor_items``)."""
    if config.neighbor_items == 0 or world.social.num_edges == 0:
        return [""] * len(users)
    p, c, g = world.population, world.catalog, world.social
    lo, hi = g.indptr[users], g.indptr[users + 1]
    deg = hi - lo
    flat = np.concatenate([g.indices[a:b] for a, b in zip(lo, hi)]) if deg.sum() else np.zeros(0, np.int64)
    m = p.memory_size
    last = (p.memory_pos[flat] - 1) % m
    item = p.memory_items[flat, last]
    liked = (p.memory_pos[flat] > 0) & (p.memory_ratings[flat, last] >= 4)
    out = []
    start = 0
    for b in range(len(users)):
        sel = item[start: start + deg[b]][liked[start: start + deg[b]]]
        start += deg[b]
        names = list(dict.fromkeys(c.titles[i] for i in sel))[: config.neighbor_items]
        out.append(("Your friends recently loved: " + "; ".join(names) + ".\n") if names else "")
    return out


def build_prompts(world: "World", users: np.ndarray, slates: np.ndarray, config: PromptConfig,
                  social: bool = True) -> Prompts:
    """The prompts of B users each shown a slate (B, k) of item ids."""
    users = np.asarray(users, np.int64)
    c, persona = world.catalog, world.population.persona
    labels = option_labels(slates.shape[1])
    personas = [f"{INSTRUCTION}\nYou are a {persona.describe(int(u))}.\n" for u in users]
    interests = interest_summary(world, users, config)
    memory = memory_text(world, users, config)
    friends = neighbor_text(world, users, config) if social else [""] * len(users)
    state = [a + b + f for a, b, f in zip(interests, memory, friends)]
    questions = []
    for b in range(len(users)):
        lines = []
        for j, item in enumerate(slates[b]):
            extra = f" ({_genre_text(c, int(item))})" if config.show_genres else ""
            lines.append(f"{labels[j]}. {c.titles[item]}{extra}")
        lines.append(f"{labels[-1]}. none of these")
        questions.append("Recommended for you now:\n" + "\n".join(lines) + f"\n{ANSWER_CUE}")
    return Prompts(personas, state, questions)


def rating_suffix(label: str) -> str:
    """What follows the question once the user picked ``label``: the answer, then the rating cue."""
    return f" {label}\n{RATING_CUE}"
