"""Specifications of the policies: valid slates from all, the expected CTR orderings on a small world,
the offline fits (item-kNN similarity, ALS) and the name registry.

CTR comparisons are relative (the choice model's calibration may move absolute levels) and averaged
over two episodes of 300 users x 60 steps, where one policy's CTR has a standard error of ~0.003.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import simenv  # noqa: F401  (registers RecSim-LLM-v0)
from policies import (
    POLICIES,
    ItemKNNPolicy,
    LinUCBPolicy,
    MatrixFactorizationPolicy,
    OraclePolicy,
    PopularityPolicy,
    RandomPolicy,
    collect_interactions,
    evaluate,
    make_policy,
)
from policies.knn import top_k_per_row
from policies.mf import als_half_step
from simenv.datasets.base import Interactions

NUM_USERS = NUM_ITEMS = NUM_ENVS = 300
STEPS = 60
LOG_SEED = 100  # the logging run; evaluations use other seeds
EVAL_SEED = 7


@pytest.fixture(scope="module")
def env():
    env = gym.make_vec("RecSim-LLM-v0", num_envs=NUM_ENVS, vectorization_mode="vector_entry_point",
                       num_users=NUM_USERS, num_items=NUM_ITEMS)
    yield env
    env.close()


@pytest.fixture(scope="module")
def random_logs(env) -> Interactions:
    return collect_interactions(env, RandomPolicy(seed=1), steps=STEPS, seed=LOG_SEED)


@pytest.fixture(scope="module")
def fitted(random_logs) -> dict[str, object]:
    return {
        "knn": ItemKNNPolicy().fit(random_logs, NUM_ITEMS),
        "mf": MatrixFactorizationPolicy().fit(random_logs, NUM_ITEMS, NUM_USERS),
    }


def ctr(policy, env, episodes: int = 2) -> float:
    return float(np.mean([r["ctr"] for r in evaluate(policy, env, episodes=episodes, seed=EVAL_SEED, steps=STEPS)]))


def ctr_per_step(policy, env, seed: int = EVAL_SEED) -> np.ndarray:
    """(STEPS,) clicks per active user at each step of one run."""
    obs, _ = env.reset(seed=seed)
    policy.setup(env)
    out = np.empty(STEPS)
    for t in range(STEPS):
        actions = policy.act(obs)
        next_obs, reward, _, _, info = env.step(actions)
        policy.update(obs, actions, reward, info)
        active = info["_clicked"]
        out[t] = (info["clicked"] & active).sum() / max(active.sum(), 1)
        obs = next_obs
    return out


def _policy(name: str, fitted) -> object:
    return fitted[name] if name in fitted else make_policy(name)


# every policy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_returns_distinct_in_range_candidate_positions(env, fitted, name):
    policy = _policy(name, fitted)
    obs, _ = env.reset(seed=3)
    policy.setup(env)
    k, c = env.unwrapped.config.slate_size, env.unwrapped.config.num_candidates
    for _ in range(3):
        actions = policy.act(obs)
        assert actions.shape == (NUM_ENVS, k)
        assert np.issubdtype(actions.dtype, np.integer)
        assert actions.min() >= 0 and actions.max() < c
        assert (np.diff(np.sort(actions, axis=1), axis=1) > 0).all(), "positions repeat within a slate"
        next_obs, reward, _, _, info = env.step(actions)  # the env accepts them
        policy.update(obs, actions, reward, info)
        obs = next_obs


def test_evaluate_returns_one_dict_per_episode_with_ctr_in_unit_interval(env):
    results = evaluate(RandomPolicy(), env, episodes=2, seed=1, steps=5)
    assert len(results) == 2
    for r in results:
        assert {"ctr", "mean_rating", "return", "coverage", "leave_rate", "user_steps"} <= set(r)
        assert 0.0 <= r["ctr"] <= 1.0
        assert r["user_steps"] > 0


# CTR orderings --------------------------------------------------------------------------------------


def test_oracle_beats_popular_and_popular_beats_random(env):
    oracle, popular, random = ctr(OraclePolicy(), env), ctr(PopularityPolicy(), env), ctr(RandomPolicy(), env)
    assert oracle > popular > random


def test_linucb_learns_to_beat_random_in_the_second_half_of_a_run(env):
    half = STEPS // 2
    linucb = ctr_per_step(LinUCBPolicy(), env)[half:].mean()
    random = ctr_per_step(RandomPolicy(), env)[half:].mean()
    assert linucb > random + 0.02


def test_item_knn_fitted_on_random_logs_beats_random(env, fitted):
    assert ctr(fitted["knn"], env) > ctr(RandomPolicy(), env) + 0.02


def test_matrix_factorization_fitted_on_random_logs_beats_random(env, fitted):
    assert ctr(fitted["mf"], env) > ctr(RandomPolicy(), env) + 0.01


# logs -----------------------------------------------------------------------------------------------


def test_collect_interactions_logs_exactly_the_clicks_evaluate_counts(env, random_logs):
    (run,) = evaluate(RandomPolicy(seed=1), env, episodes=1, seed=LOG_SEED, steps=STEPS)
    assert len(random_logs) == round(run["ctr"] * run["user_steps"])
    assert random_logs.user.min() >= 0 and random_logs.user.max() < NUM_USERS
    assert random_logs.item.min() >= 0 and random_logs.item.max() < NUM_ITEMS
    assert ((random_logs.rating >= 1) & (random_logs.rating <= 5)).all()
    assert (np.diff(random_logs.timestamp) >= 0).all() and random_logs.timestamp.max() < STEPS


def test_collect_interactions_rejects_a_non_positive_step_count(env):
    with pytest.raises(ValueError, match="steps=0"):
        collect_interactions(env, RandomPolicy(), steps=0)


# item-kNN -------------------------------------------------------------------------------------------


def _log(pairs: list[tuple[int, int]]) -> Interactions:
    user, item = np.array(pairs, np.int32).T
    n = len(pairs)
    return Interactions(user, item, np.full(n, 4.0, np.float32), np.arange(n, dtype=np.int64))


def test_item_knn_similarity_is_shrunk_cosine_of_co_clicks_without_self_similarity():
    # users 0, 1 clicked items 0 and 1; user 2 clicked 1 and 2; item 3 nobody
    knn = ItemKNNPolicy(shrinkage=0.0).fit(_log([(0, 0), (0, 1), (1, 0), (1, 1), (2, 1), (2, 2)]), 4)
    s = knn.similarity.toarray()
    np.testing.assert_allclose(s[0, 1], 2 / np.sqrt(2 * 3))
    np.testing.assert_allclose(s[1, 2], 1 / np.sqrt(3 * 1))
    assert s[0, 2] == 0 and not s[3].any() and not np.diag(s).any()
    np.testing.assert_array_equal(knn.counts, [2, 3, 1, 0])


def test_item_knn_ranks_candidates_by_similarity_to_history_then_by_popularity():
    knn = ItemKNNPolicy(shrinkage=0.0).fit(_log([(0, 0), (0, 1), (1, 0), (1, 1), (2, 1), (2, 2), (3, 3)]), 4)
    obs = {"candidates": np.array([[3, 2, 0], [3, 2, 0]], np.int32),
           "history": np.array([[1, -1], [-1, -1]], np.int32)}
    scores = knn.scores(obs)
    assert np.argsort(-scores[0], kind="stable").tolist() == [2, 1, 0]  # s(0, 1) > s(2, 1) > s(3, 1) = 0
    assert np.argsort(-scores[1], kind="stable").tolist() == [2, 0, 1]  # no history: counts 2 > 1 = 1, then position


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_top_k_per_row_keeps_the_k_largest_entries_of_each_row(k, seed):
    rng = np.random.default_rng(seed)
    m = sp.random(12, 15, density=0.4, format="csr", rng=rng)
    kept = top_k_per_row(m, k)
    dense, kept_dense = m.toarray(), kept.toarray()
    for row, kept_row in zip(dense, kept_dense):
        nz = np.sort(row[row > 0])[::-1]
        assert (kept_row > 0).sum() == min(k, len(nz))
        np.testing.assert_allclose(np.sort(kept_row[kept_row > 0])[::-1], nz[:k])
        assert np.isin(kept_row[kept_row > 0], row).all()


# matrix factorization -------------------------------------------------------------------------------


def test_als_half_step_is_the_closed_form_of_hu_koren_volinsky_for_every_row():
    rng = np.random.default_rng(0)
    r = sp.random(6, 9, density=0.4, format="csr", rng=rng)
    r.data = rng.integers(1, 4, r.nnz).astype(np.float64)
    y = rng.normal(size=(9, 3))
    reg, alpha = 0.5, 10.0
    x = als_half_step(r, y, reg, alpha)
    dense = r.toarray()
    for u in range(6):
        c = 1.0 + alpha * dense[u]
        p = (dense[u] > 0).astype(float)
        expected = np.linalg.solve(y.T @ (c[:, None] * y) + reg * np.eye(3), y.T @ (c * p))
        np.testing.assert_allclose(x[u], expected, rtol=1e-10, atol=1e-12)


def test_als_loss_never_increases_and_falls_over_the_iterations(random_logs):
    mf = MatrixFactorizationPolicy(iters=8).fit(random_logs, NUM_ITEMS, NUM_USERS)
    loss = np.array(mf.loss_history)
    assert len(loss) == 8
    assert (np.diff(loss) <= 1e-6 * loss[:-1]).all()
    assert loss[-1] < 0.8 * loss[0]


def test_mf_gives_a_user_without_training_clicks_the_mean_factor_of_their_history(random_logs):
    mf = MatrixFactorizationPolicy(factors=4, iters=2).fit(random_logs, NUM_ITEMS, NUM_USERS + 1)
    new_user = NUM_USERS  # in range, but no clicks in the log
    history = np.array([[5, 9, -1], [-1, -1, -1], [-1, -1, -1]], np.int32)
    users = np.array([new_user, new_user, int(random_logs.user[0])])
    vec, has = mf.user_vectors(users, history)
    np.testing.assert_allclose(vec[0], mf.item_factors[[5, 9]].mean(axis=0))
    assert has.tolist() == [True, False, True]
    np.testing.assert_allclose(vec[2], mf.user_factors[users[2]])


@pytest.mark.parametrize("policy", [ItemKNNPolicy(), MatrixFactorizationPolicy()], ids=["knn", "mf"])
def test_offline_policies_must_be_fitted_before_acting(env, policy):
    obs, _ = env.reset(seed=0)
    policy.setup(env)
    with pytest.raises(RuntimeError, match=r"fit\(interactions, num_items\)"):
        policy.act(obs)


def test_fit_rejects_logs_with_items_outside_the_catalog(random_logs):
    with pytest.raises(ValueError, match="Interactions.item"):
        ItemKNNPolicy().fit(random_logs, 10)


# LinUCB ---------------------------------------------------------------------------------------------


def test_linucb_update_learns_from_the_shown_items_of_active_rows_only(env):
    obs, _ = env.reset(seed=5)
    policy = LinUCBPolicy()
    policy.setup(env)
    actions = policy.act(obs)
    _, reward, _, _, info = env.step(actions)
    info = dict(info, _clicked=np.arange(NUM_ENVS) < 100)  # pretend 200 rows were autoresetting
    policy.update(obs, actions, reward, info)
    k = env.unwrapped.config.slate_size
    assert policy.examples == 100 * k
    np.testing.assert_allclose(policy.A @ policy.theta, policy.b, atol=1e-8)
    clicks = int((info["clicked"][:100]).sum())
    assert policy.b[-1] == clicks  # the bias feature sums the rewards


# registry -------------------------------------------------------------------------------------------


def test_make_policy_builds_every_named_policy_with_its_arguments():
    for name, cls in POLICIES.items():
        assert type(make_policy(name)) is cls and cls.name == name
    assert make_policy("knn", k_neighbors=7).k_neighbors == 7


def test_make_policy_rejects_an_unknown_name_listing_the_valid_ones():
    with pytest.raises(ValueError, match="unknown policy 'bandit'.*'linucb'.*'random'"):
        make_policy("bandit")
