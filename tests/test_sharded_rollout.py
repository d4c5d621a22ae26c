"""Sharded rollouts: a world split over workers is the same world. Sharded runs equal the
single-process vector env bit for bit (social edges across shards included), the same seed gives
the same results on 1, 2 or 4 Ray actors, a worker killed mid-run is recovered from the last
checkpoint with the same final metrics, and a stopped run resumes from disk."""
import gymnasium as gym
import numpy as np
import pytest

import simenv  # noqa: F401
from policies import make_policy
from simenv.rollout import ShardedRollout
from simenv.shard import shard_ranges

WORLD = dict(num_users=240, num_items=150, slate_size=4, num_candidates=12, horizon=6, candidate_features=False,
             embedding_model="random", world_seed=3, mean_degree=8.0)  # social refresh every 5 ticks (default)
STEPS = 17


def single_process(policy: str, seed: int):
    env = gym.make_vec("RecSim-LLM-v0", num_envs=WORLD["num_users"], vectorization_mode="vector_entry_point",
                       audit=False, **WORLD)
    obs, _ = env.reset(seed=seed)
    pol = make_policy(policy)
    pol.setup(env)
    clicks, ratings = [], []
    for _ in range(STEPS):
        obs, _, _, _, info = env.step(pol.act(obs))
        hit = info["clicked"] & info["_clicked"]
        clicks.append(int(hit.sum()))
        ratings.append(float(info["rating"][hit].sum()))
    w = env.unwrapped.world
    return clicks, ratings, {**w.population.arrays(), "spill": w.spill}


def same_results(a, b) -> None:
    for key in a.steps:
        np.testing.assert_array_equal(a.steps[key], b.steps[key], err_msg=key)
    np.testing.assert_array_equal(a.exposure, b.exposure)
    np.testing.assert_array_equal(a.consumed, b.consumed)


def test_shards_cover_the_users_in_contiguous_near_equal_ranges():
    assert shard_ranges(10, 3) == [(0, 3), (3, 7), (7, 10)]
    with pytest.raises(ValueError, match="num_workers=5"):
        shard_ranges(4, 5)


@pytest.mark.parametrize("policy", ["oracle", "popular"])
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_a_sharded_run_equals_the_single_process_run_bit_for_bit(policy, workers):
    kwargs = {"online": False} if policy == "popular" else {}
    clicks, ratings, state = single_process(policy, seed=7)
    if policy == "popular":  # the single-process reference above learns online; compare like with like
        env = gym.make_vec("RecSim-LLM-v0", num_envs=WORLD["num_users"], vectorization_mode="vector_entry_point",
                           audit=False, **WORLD)
        obs, _ = env.reset(seed=7)
        pol = make_policy("popular", online=False)
        pol.setup(env)
        clicks = []
        for _ in range(STEPS):
            obs, _, _, _, info = env.step(pol.act(obs))
            clicks.append(int((info["clicked"] & info["_clicked"]).sum()))
        state = {**env.unwrapped.world.population.arrays(), "spill": env.unwrapped.world.spill}
    result = ShardedRollout(WORLD, policy, kwargs, num_workers=workers, seed=7, backend="local").run(
        STEPS, final_rows=True)
    assert result.steps["clicks"].tolist() == clicks
    if policy == "oracle":
        assert result.steps["rating"].tolist() == ratings
    for key, value in state.items():  # interests moved by neighbors in other shards included
        np.testing.assert_array_equal(result.rows[key], value, err_msg=key)


def test_the_social_exchange_matters_so_the_equality_is_not_vacuous():
    on = ShardedRollout(WORLD, "oracle", num_workers=2, seed=7, backend="local").run(STEPS, final_rows=True)
    off = ShardedRollout({**WORLD, "social_graph": "none"}, "oracle", num_workers=2, seed=7, backend="local").run(
        STEPS, final_rows=True)
    assert not np.array_equal(on.rows["interests"], off.rows["interests"])
    assert (on.rows["spill"] >= 0).any()


def test_the_same_seed_gives_identical_results_on_one_two_and_four_ray_actors(ray_local):
    runs = [ShardedRollout(WORLD, "oracle", num_workers=n, seed=11, cpus_per_worker=0.5).run(STEPS, final_rows=True)
            for n in (1, 2, 4)]
    for other in runs[1:]:
        same_results(runs[0], other)
        np.testing.assert_array_equal(runs[0].rows["interests"], other.rows["interests"])
    assert runs[0].steps["served"].size == STEPS and runs[0].steps["clicks"].sum() > 0
    with pytest.raises(ValueError, match="needs 8 CPUs; the Ray cluster has 2"):
        ShardedRollout(WORLD, "oracle", num_workers=8, seed=11).run(STEPS)


def test_a_worker_killed_mid_run_is_recovered_from_the_last_checkpoint_with_identical_final_metrics(ray_local,
                                                                                                     tmp_path):
    undisturbed = ShardedRollout(WORLD, "popular", num_workers=2, seed=5, checkpoint_every=4, cpus_per_worker=0.5).run(STEPS)
    killed = []

    def kill_once(t, rollout):
        if t == 10 and not killed:
            killed.append(t)
            ray_local.kill(rollout.workers[1], no_restart=True)

    rollout = ShardedRollout(WORLD, "popular", num_workers=2, seed=5, checkpoint_every=4, cpus_per_worker=0.5,
                             checkpoint_dir=tmp_path / "ckpt")
    recovered = rollout.run(STEPS, on_chunk=kill_once)
    assert killed and recovered.restarts == 1
    same_results(undisturbed, recovered)  # the online popularity counts were restored too
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("step_*")) == ["step_000004", "step_000008",
                                                                          "step_000012", "step_000016"]


class Stop(Exception):
    pass


def test_a_stopped_run_resumes_from_its_last_checkpoint_on_disk(tmp_path):
    full = ShardedRollout(WORLD, "popular", num_workers=3, seed=2, backend="local").run(STEPS)

    def stop(t, rollout):
        if t == 12:
            raise Stop

    first = ShardedRollout(WORLD, "popular", num_workers=3, seed=2, backend="local", checkpoint_every=4,
                           checkpoint_dir=tmp_path)
    with pytest.raises(Stop):
        first.run(STEPS, on_chunk=stop)
    resumed = ShardedRollout(WORLD, "popular", num_workers=3, seed=2, backend="local", checkpoint_every=4,
                             checkpoint_dir=tmp_path).run(STEPS, resume=True)
    same_results(full, resumed)
    other_layout = ShardedRollout(WORLD, "popular", num_workers=2, seed=2, backend="local", checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="same num_workers"):
        other_layout.run(STEPS, resume=True)
