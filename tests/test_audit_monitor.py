"""The audit recorded inside the env: what it accumulates, what it concludes, and how it fails."""
import math

import gymnasium as gym
import numpy as np
import pytest

import simenv  # noqa: F401
from policies import evaluate, make_policy
from simenv.audit import diversity, exposure, homogenization, kernels, popularity
from simenv.audit.hallucination import TitleIndex, ground

SIZES = dict(num_users=300, num_items=400, horizon=30, world_seed=3)


def make(**kw):
    return gym.make_vec("RecSim-LLM-v0", num_envs=kw.pop("num_envs", 300), vectorization_mode="vector_entry_point",
                        **{**SIZES, **kw})


def run(policy_name, env, steps=30, seed=0):
    evaluate(make_policy(policy_name, seed=seed), env, steps=steps, seed=seed)
    return env.unwrapped.sim.monitor.summary()


def test_the_streamed_measurements_equal_the_metrics_recomputed_from_the_logged_slates():
    env = make(num_envs=100)
    policy = make_policy("random", seed=1)
    obs, _ = env.reset(seed=5)
    policy.setup(env)
    slates, clicks, users = [], [], []
    for _ in range(25):
        obs, _, _, _, info = env.step(policy.act(obs))
        active = info["_clicked"]
        slates.append(info["slate"][active])
        clicks.append(info["clicked"][active])
        users.append(info["user_id"][active])
    slates, clicks, users = np.concatenate(slates), np.concatenate(clicks), np.concatenate(users)
    mon = env.unwrapped.sim.monitor
    s = mon.summary()
    pop = env.unwrapped.world.catalog.popularity
    assert s["engagement"]["user_steps"] == len(slates)
    assert s["engagement"]["ctr"] == pytest.approx(clicks.mean())
    assert s["popularity"]["arp"] == pytest.approx(popularity.arp(slates, pop))
    assert s["popularity"]["aplt"] == pytest.approx(popularity.aplt(slates, popularity.long_tail(pop)))
    shown = np.bincount(slates.ravel(), minlength=len(pop))
    assert s["exposure"]["gini"] == pytest.approx(exposure.gini(shown))
    assert s["exposure"]["coverage"] == pytest.approx(exposure.coverage(shown))
    assert mon.series()["step.coverage"][-1] == pytest.approx(exposure.coverage(shown))
    gender = env.unwrapped.world.population.persona.gender[users]
    names = env.unwrapped.world.population.persona.gender_names
    for code, name in enumerate(names):
        if (gender == code).any():
            assert s["fairness"]["gender"]["ctr"][name] == pytest.approx(clicks[gender == code].mean())


def test_the_snapshot_kernels_equal_the_pure_metric_functions():
    rng = np.random.default_rng(0)
    items, users, rows, memory, k = 50, 40, 30, 6, 5
    genres = rng.random((items, 4)) < 0.4
    genres[np.arange(items), rng.integers(0, 4, items)] = True
    emb = rng.standard_normal((items, 8)).astype(np.float32)
    pop = popularity.shares(rng.integers(1, 100, items).astype(float))
    hist = rng.integers(0, 12, (rows, memory))  # small ids: repeats and overlaps
    hist[rng.random((rows, memory)) < 0.3] = -1
    hist[0] = -1  # a user without history
    slates = np.stack([rng.choice(items, k, replace=False) for _ in range(rows)])
    out = np.empty((rows, 4))
    kernels.slate_rows(hist, slates, genres, emb, 1 / np.linalg.norm(emb, axis=1), pop, 0.01, out)
    has = np.isfinite(out[:, 2])
    assert not has[0] and has[1:].all()
    np.testing.assert_allclose(out[has, 0], diversity.miscalibration(hist, slates, genres, 0.01), rtol=1e-9)
    np.testing.assert_allclose(out[:, 1], diversity.intra_list_diversity(slates, emb), rtol=1e-5)
    lift = (out[has, 3].mean() - out[has, 2].mean()) / out[has, 2].mean()
    assert lift == pytest.approx(popularity.popularity_lift(slates, hist, pop))

    candidates = np.stack([rng.choice(items, 2 * k, replace=False) for _ in range(rows)])
    values = rng.random(candidates.shape)
    counts, tail = np.zeros(4), popularity.long_tail(pop)
    kernels.relevance_counts(values, candidates, candidates[:, :k], tail, counts)
    relevant = np.take_along_axis(candidates, np.argsort(-values, axis=1)[:, :k], axis=1)
    hit = np.array([np.isin(r, c[:k]) for r, c in zip(relevant, candidates)])
    assert counts.tolist() == [(hit & ~tail[relevant]).sum(), (hit & tail[relevant]).sum(),
                               (~tail[relevant]).sum(), tail[relevant].sum()]

    interests = rng.standard_normal((users, 3, 8)).astype(np.float32)
    weights = rng.dirichlet(np.ones(3), users).astype(np.float32)
    degree = rng.integers(0, 4, users)
    indptr = np.concatenate([[0], np.cumsum(degree)])
    indices = rng.integers(0, users, indptr[-1])
    followed = np.sort(rng.choice(users, rows, replace=False))
    nn, rand = rng.integers(0, rows, rows), rng.integers(0, rows, rows)
    tastes, out = np.empty((rows, 8)), np.empty((rows, 5))
    kernels.followed_rows(followed, hist, nn, rand, genres, interests, weights, indptr, indices, tastes, out)
    np.testing.assert_allclose(tastes, homogenization.tastes(interests[followed], weights[followed]), atol=1e-6)
    np.testing.assert_allclose(out[:, 0], homogenization.jaccard(hist, hist[nn]), equal_nan=True)
    np.testing.assert_allclose(out[:, 1], homogenization.jaccard(hist, hist[rand]), equal_nan=True)
    np.testing.assert_allclose(out[has, 2], homogenization.genre_entropy(hist, genres), rtol=1e-9)
    assert out[:, 3].sum() / out[:, 4].sum() == pytest.approx(
        homogenization.neighbor_similarity(followed, indptr, indices, interests, weights), rel=1e-5)


def test_most_popular_shows_more_popular_and_more_concentrated_slates_than_random():
    env = make()
    rnd, pop = run("random", env), run("popular", env)
    assert pop["popularity"]["arp"] > 1.5 * rnd["popularity"]["arp"]
    assert pop["exposure"]["gini"] > rnd["exposure"]["gini"] + 0.2
    assert pop["popularity"]["aplt"] < rnd["popularity"]["aplt"]
    assert pop["popularity"]["pop_rsp"] > rnd["popularity"]["pop_rsp"]
    assert pop["exposure"]["coverage"] < rnd["exposure"]["coverage"]


def test_a_popularity_recommender_makes_users_consume_more_alike_than_random_slates():
    env = make()
    rnd, pop = run("random", env), run("popular", env)
    assert pop["homogenization"]["similarity_random"]["last"] > rnd["homogenization"]["similarity_random"]["last"]


def test_snapshots_are_taken_every_interval_ticks_and_series_have_one_value_per_step():
    env = make(audit={"interval": 5, "sample_users": 50})
    run("random", env, steps=20)
    series = env.unwrapped.sim.monitor.series()
    assert len(series["step.ctr"]) == 20
    assert series["snap.clock"].tolist() == [5, 10, 15, 20]
    for key in ("snap.gini", "snap.miscalibration", "snap.ild", "snap.dispersion", "snap.neighbor_similarity"):
        assert len(series[key]) == 4 and np.isfinite(series[key][-1]), key
    assert series["lorenz.exposure"][0] == 0 and series["lorenz.exposure"][-1] == pytest.approx(1)


def test_the_same_seed_gives_the_same_audit():
    a = run("random", make(), steps=15, seed=4)
    b = run("random", make(), steps=15, seed=4)
    assert a == b


def test_metrics_without_data_are_nan_with_a_reason():
    env = make()
    env.reset(seed=0)
    s = env.unwrapped.sim.monitor.summary()
    assert math.isnan(s["engagement"]["ctr"]) and "served" in s["notes"]["ctr"]
    assert math.isnan(s["exposure"]["gini"]) and "nothing was shown" in s["notes"]["gini"]


def test_the_audit_can_be_switched_off_and_rejects_unknown_groups():
    assert make(audit=False).unwrapped.sim.monitor is None
    with pytest.raises(ValueError, match="'height' does not exist"):
        make(audit={"groups": ["height"]})
    with pytest.raises(ValueError, match="audit.intervall is not a parameter.*'interval'"):
        make(audit={"intervall": 3})


def test_llm_generations_are_counted_into_hallucination_rates():
    env = make()
    env.reset(seed=0)
    mon = env.unwrapped.sim.monitor
    titles = env.unwrapped.world.catalog.titles
    index = TitleIndex(titles)
    g = ground(index, [[titles[0], "A Film That Does Not Exist"], [titles[1], titles[1]]], np.array([[0, 5], [7, 8]]))
    mon.record_generations(g, valid=np.array([True, False]))
    llm = mon.summary()["llm"]
    assert llm["emitted"] == 4 and llm["hallucinated"] == 1 and llm["duplicates"] == 1
    assert llm["out_of_candidate_rate"] == 0.5 and llm["valid_ratio"] == 0.5
