"""LLM users: prompts that follow the state, exact batched scoring, and a counted fallback."""
import gymnasium as gym
import numpy as np
import pytest

import simenv  # noqa: F401
from agents.llm import LLMUser, PromptConfig, build_prompts
from agents.llm.local import LocalLM
from agents.llm.model import LMConfig, new_lm
from agents.llm.prompts import ANSWER_CUE, RATING_CUE, RATINGS, option_labels, rating_suffix
from policies import evaluate, make_policy

WORLD = dict(num_users=40, num_items=120, embedding_model="random", world_seed=2, slate_size=4, num_candidates=10)


def corpus(env) -> list[str]:
    w = env.unwrapped.world
    rng = np.random.default_rng(0)
    users = np.arange(w.num_users)
    slates = np.stack([rng.choice(w.catalog.num_items, 4, replace=False) for _ in users])
    p = build_prompts(w, users, slates, PromptConfig())
    return list(w.catalog.titles) + [p.full(b) for b in range(len(users))]


@pytest.fixture(scope="module")
def user_lm(tmp_path_factory):
    env = gym.make("RecSim-LLM-v0", **WORLD)
    env.reset(seed=0)
    return new_lm(corpus(env), tmp_path_factory.mktemp("user_lm"), LMConfig(vocab_size=700))


def prompt_parts(n: int):
    """Prompts of the first n users of a fresh world, each shown a seeded slate of 4, and their
    state + question suffixes."""
    env = gym.make("RecSim-LLM-v0", **WORLD)
    env.reset(seed=0)
    users = np.arange(n)
    slates = np.stack([np.random.default_rng(u).choice(120, 4, replace=False) for u in users])
    p = build_prompts(env.unwrapped.world, users, slates, PromptConfig())
    return p, [s + q for s, q in zip(p.state, p.question)]


def test_the_interest_text_follows_the_interest_vectors():
    env = gym.make("RecSim-LLM-v0", **WORLD)
    env.reset(seed=0)
    w = env.unwrapped.world
    users = np.array([0])
    slate = np.arange(4)[None]
    before = build_prompts(w, users, slate, PromptConfig()).state[0]
    # move every interest of user 0 onto item 7: the prompt must now name item 7 as its taste
    w.population.interests[0] = w.catalog.embeddings[7]
    after = build_prompts(w, users, slate, PromptConfig()).state[0]
    assert w.catalog.titles[7] in after and after != before


def test_batched_cached_scores_equal_one_by_one_uncached_scores(user_lm):
    p, suffixes = prompt_parts(9)
    batched = LocalLM(user_lm, batch_size=4)
    single = LocalLM(user_lm, batch_size=1, prefix_cache=0)
    _, ids = batched.answer_tokens(ANSWER_CUE, option_labels(4))
    a = batched.next_token_logprobs(p.persona, suffixes, ids)
    again = batched.next_token_logprobs(p.persona, suffixes, ids)  # now every persona is cached
    b = single.next_token_logprobs(p.persona, suffixes, ids)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(again, b, atol=1e-5)
    assert batched.forward_passes == 3 + 3 + 3  # prefixes + suffixes for 3 batches, then suffixes only


def test_an_episode_runs_with_llm_users_in_the_single_and_the_vector_env(user_lm):
    env = gym.make("RecSim-LLM-v0", user_model="llm", llm={"model": str(user_lm)}, horizon=3, **WORLD)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert not info["fallback"]
    venv = gym.make_vec("RecSim-LLM-v0", num_envs=8, vectorization_mode="vector_entry_point", user_model="llm",
                        llm={"model": str(user_lm)}, horizon=5, **WORLD)
    result = evaluate(make_policy("random", seed=0), venv, steps=5, seed=0)
    assert result and venv.unwrapped.sim.user_model.stats["decisions"] == 8 * 5


def test_the_same_seed_gives_the_same_llm_trajectory(user_lm):
    def clicks(seed):
        venv = gym.make_vec("RecSim-LLM-v0", num_envs=6, vectorization_mode="vector_entry_point", user_model="llm",
                            llm={"model": str(user_lm), "temperature": 0.5}, **WORLD)
        obs, _ = venv.reset(seed=seed)
        out = []
        for _ in range(4):
            obs, _, _, _, info = venv.step(np.tile(np.arange(4), (6, 1)))
            out.append(info["choice"].copy())
        return np.stack(out)

    np.testing.assert_array_equal(clicks(3), clicks(3))


class Garbled:
    """A backend that returns NaN for every other user's choice, as a server answering garbage would."""

    def __init__(self, inner):
        self.inner = inner

    def answer_tokens(self, cue, labels):
        return self.inner.answer_tokens(cue, labels)

    def next_token_logprobs(self, prefixes, suffixes, ids, keys=None):
        out = self.inner.next_token_logprobs(prefixes, suffixes, ids)
        if suffixes[0].rstrip().endswith(ANSWER_CUE):  # the choice, not the rating that follows a click
            out[::2] = np.nan
        return out


def test_unusable_rows_fall_back_to_the_embedded_model_and_are_counted(user_lm):
    user = LLMUser({"model": str(user_lm)}, scorer=Garbled(LocalLM(user_lm)))
    venv = gym.make_vec("RecSim-LLM-v0", num_envs=6, vectorization_mode="vector_entry_point", user_model=user,
                        **WORLD)
    venv.reset(seed=0)
    _, _, _, _, info = venv.step(np.tile(np.arange(4), (6, 1)))
    assert info["fallback"].tolist() == [True, False] * 3
    assert user.stats["unusable"] == 3 and user.stats["decisions"] == 6
    assert venv.unwrapped.sim.monitor.summary()["engagement"]["fallback_share"] == pytest.approx(0.5)


def test_bad_llm_options_are_errors_that_name_the_key(user_lm):
    with pytest.raises(ValueError, match="llm: unknown keys"):
        gym.make("RecSim-LLM-v0", user_model="llm", llm={"modle": str(user_lm)}, **WORLD)
    with pytest.raises(ValueError, match="llm.model"):
        gym.make("RecSim-LLM-v0", user_model="llm", **WORLD)
    with pytest.raises(FileNotFoundError, match="config.json"):
        gym.make("RecSim-LLM-v0", user_model="llm", llm={"model": "/nonexistent"}, **WORLD)
    with pytest.raises(ValueError, match="configures user_model='llm'"):
        gym.make("RecSim-LLM-v0", llm={"model": str(user_lm)}, **WORLD)


def test_a_rating_continued_from_the_kept_choice_pass_equals_rereading_the_whole_prompt(user_lm):
    p, suffixes = prompt_parts(7)
    lm = LocalLM(user_lm, batch_size=3)
    _, letters = lm.answer_tokens(ANSWER_CUE, option_labels(4))
    _, digits = lm.answer_tokens(RATING_CUE, RATINGS)
    lm.next_token_logprobs(p.persona, suffixes, letters, keep=True)
    rows = np.array([0, 2, 3, 6])  # across the three kept batches
    answers = [rating_suffix(label) for label in "ACBD"]
    continued = lm.continued_logprobs(rows, answers, digits)
    reread = LocalLM(user_lm, prefix_cache=0).next_token_logprobs(
        [p.persona[r] for r in rows], [suffixes[r] + a for r, a in zip(rows, answers)], digits)
    np.testing.assert_allclose(continued, reread, atol=1e-5)
