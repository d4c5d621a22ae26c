"""The LLM recommender in the simulator and offline: valid slates from likelihood ranking that does
not depend on the batch, generated titles grounded and counted in the audit, and the LLaRA metrics."""
import gymnasium as gym
import numpy as np
import pytest

import simenv  # noqa: F401
from agents.llm.model import LMConfig, new_lm
from policies import evaluate, make_policy
from policies.llm.evaluate import evaluate_recommender, observations, summary
from policies.llm.preference_data import RecExamples
from policies.llm.prompts import display_title, recommendation_prompt, response

WORLD = dict(num_users=12, num_items=60, embedding_model="random", world_seed=3, slate_size=3, num_candidates=8,
             horizon=3)


@pytest.fixture(scope="module")
def rec_lm(tmp_path_factory):
    env = gym.make("RecSim-LLM-v0", **WORLD)
    env.reset(seed=0)
    titles = [display_title(t) for t in env.unwrapped.world.catalog.titles]
    texts = [recommendation_prompt(titles[i:i + 3], titles[i + 3:i + 11]) + response(titles[i]) for i in range(50)]
    return new_lm(texts, tmp_path_factory.mktemp("rec_lm"), LMConfig(vocab_size=500, hidden_size=32,
                                                                      intermediate_size=64))


def vector_env(**kw):
    return gym.make_vec("RecSim-LLM-v0", num_envs=WORLD["num_users"], vectorization_mode="vector_entry_point",
                        **{**WORLD, **kw})


def test_rank_mode_shows_distinct_candidates_and_scores_do_not_depend_on_the_batch(rec_lm):
    env = vector_env()
    obs, _ = env.reset(seed=0)
    policy = make_policy("llm", model=rec_lm, batch_size=5)
    policy.setup(env)
    slates = policy.act(obs)
    assert env.action_space.contains(slates)
    together = policy.scores(obs)
    alone = np.concatenate([policy.scores({k: v[i:i + 1] for k, v in obs.items()}) for i in range(3)])
    np.testing.assert_allclose(together[:3], alone, atol=1e-4)
    # best first: the slate's scores are non-increasing and no unshown candidate beats its last item
    picked = np.take_along_axis(together, slates, axis=1)
    assert np.all(np.diff(picked, axis=1) <= 1e-9)


def test_the_llm_policy_runs_episodes_like_any_other_policy(rec_lm):
    results = evaluate(make_policy("llm", model=rec_lm), vector_env(), episodes=1)
    assert results[0]["user_steps"] > 0 and 0 <= results[0]["ctr"] <= 1


def test_generate_mode_counts_what_it_emits_in_the_audit(rec_lm):
    env = vector_env()
    policy = make_policy("llm", model=rec_lm, mode="generate", max_new_tokens=8)
    evaluate(policy, env, episodes=1)
    counts = policy.generation_counts
    audit = env.unwrapped.sim.monitor.summary()["llm"]
    assert counts["answers"] == counts["emitted"] > 0
    for key in ("emitted", "hallucinated", "out_of_candidates", "answers", "valid"):
        assert audit[key] == counts[key]
    assert audit["hallucination_rate"] == pytest.approx(counts["hallucinated"] / counts["emitted"])


def test_a_generated_candidate_title_leads_the_slate(rec_lm):
    env = vector_env()
    obs, _ = env.reset(seed=0)
    policy = make_policy("llm", model=rec_lm, mode="generate", max_new_tokens=8)
    policy.setup(env)
    policy.lm.generate = lambda prompts, n: [policy.catalog_titles[c[5]] for c in obs["candidates"]]
    slates = policy.act(obs)
    assert np.all(slates[:, 0] == 5)
    assert policy.generation_counts["valid"] == len(slates)


def test_observations_turn_oldest_first_histories_into_the_envs_newest_first():
    ex = RecExamples(user=np.array([0, 1]), history=np.array([[-1, 4, 7], [1, 2, 3]]),
                     candidates=np.array([[0, 5], [6, 8]]), target=np.array([1, 0]), shown=None)
    np.testing.assert_array_equal(observations(ex)["history"], [[7, 4, -1], [3, 2, 1]])


def test_summary_counts_hr1_over_valid_answers_and_over_all_answers():
    ex = RecExamples(user=np.arange(4), history=np.full((4, 1), 0), candidates=np.tile(np.arange(1, 4), (4, 1)),
                     target=np.zeros(4, np.int64), shown=None)
    results = {"HR@1": np.array([1, 0, 0, 0.]), "HR@5": np.ones(4), "NDCG@5": np.ones(4),
               "top_item": np.array([1, 1, 2, 3]),
               "valid": np.array([True, True, False, False]), "hit": np.array([True, False, False, False]),
               "hallucinated": np.array([False, False, True, False]),
               "out_of_candidates": np.array([False, False, False, True])}
    s = summary(results, ex, np.array([1.0, 1.0, 1.0, 1.0]))
    assert s["ValidRatio"] == 0.5 and s["HR@1 (valid)"] == 0.5 and s["HR@1 (all)"] == 0.25
    assert s["hallucination_rate"] == 0.25 and s["out_of_candidate_rate"] == 0.25
    assert s["ARP"] == pytest.approx(1.0)  # uniform popularity: every pick is the average item


def test_offline_evaluation_reports_the_llara_metrics(rec_lm):
    env = gym.make("RecSim-LLM-v0", **WORLD)
    env.reset(seed=0)
    cat = env.unwrapped.world.catalog
    rng = np.random.default_rng(0)
    cands = np.stack([rng.choice(cat.num_items, 8, replace=False) for _ in range(6)])
    ex = RecExamples(user=np.arange(6), history=np.array([[-1, 9]] * 6),
                     candidates=cands.astype(np.int64), target=rng.integers(0, 8, 6), shown=None)
    policy = make_policy("llm", model=rec_lm, max_new_tokens=8)
    policy.use_catalog(cat.titles)
    out = evaluate_recommender(policy, ex, cat.popularity)
    s = out["summary"]
    assert set(s) >= {"HR@1", "HR@5", "NDCG@5", "ValidRatio", "HR@1 (valid)", "HR@1 (all)", "hallucination_rate",
                      "ARP", "popularity_lift"}
    assert 0 <= s["HR@1 (all)"] <= s["ValidRatio"] <= 1
    assert len(out["answer"]) == 6
