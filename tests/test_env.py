"""RecSim-LLM-v0 through the Gymnasium API: registration, checker, determinism, batching, bad input."""
import subprocess
import sys
import warnings

import gymnasium as gym
import networkx as nx
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import simenv  # noqa: F401
from agents import Responses
from conftest import SMALL

NO_SOCIAL = dict(social_graph="none", dynamics={"social": False, "spillover": False})


def make(**kw):
    return gym.make("RecSim-LLM-v0", **{**SMALL, **kw})


def make_vec(n, **kw):
    return gym.make_vec("RecSim-LLM-v0", num_envs=n, vectorization_mode="vector_entry_point", **{**SMALL, **kw})


def test_single_env_passes_the_gymnasium_checker_without_warnings():
    env = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_module_qualified_id_registers_without_prior_import():
    code = ("import gymnasium as gym; e = gym.make('simenv:RecSim-LLM-v0', num_users=20, num_items=40); "
            "print(type(e.unwrapped).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("RecSimLLMEnv")


def test_the_user_model_package_imports_on_its_own():
    subprocess.run([sys.executable, "-c", "import agents"], check=True)


def test_make_vec_uses_the_native_vector_env():
    env = gym.make_vec("RecSim-LLM-v0", num_envs=8, **SMALL)
    assert type(env).__name__ == "RecSimLLMVectorEnv"
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, reward, term, trunc, info = env.step(env.action_space.sample())
    assert reward.shape == term.shape == trunc.shape == (8,)
    assert info["slate"].shape == (8, 5) and info["_rating"].all()


def rollout_vector(env, steps, seed):
    obs, _ = env.reset(seed=seed)
    traj = []
    for t in range(steps):
        a = np.tile(np.arange(env.unwrapped.config.slate_size), (env.num_envs, 1))
        obs, r, term, trunc, info = env.step(a)
        traj.append((obs["candidates"].copy(), r.copy(), info["item"].copy(), term.copy()))
    return traj


def test_same_seed_gives_the_same_trajectory_and_another_seed_does_not():
    env = make_vec(SMALL["num_users"])
    a, b, c = rollout_vector(env, 10, 1), rollout_vector(env, 10, 1), rollout_vector(env, 10, 2)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert any(not np.array_equal(x[2], z[2]) for x, z in zip(a, c))


def test_vector_and_single_env_give_each_user_the_same_trajectory():
    """Draws are keyed per user, so serving user u alone or among all users changes nothing
    (social coupling off, which is the only cross-user channel)."""
    n, steps = 12, 15
    vec = make_vec(n, num_users=n, **NO_SOCIAL)
    obs, _ = vec.reset(seed=3)
    vec_obs, vec_rew = [obs["candidates"].copy()], []
    alive = np.ones(n, bool)
    for _ in range(steps):
        obs, r, term, trunc, _ = vec.step(np.tile(np.arange(5), (n, 1)))
        vec_rew.append(np.where(alive, r, np.nan))
        vec_obs.append(np.where(alive[:, None], obs["candidates"], -1))
        alive &= ~(term | trunc)
    single = make(num_users=n, **NO_SOCIAL).unwrapped
    for user in range(n):
        o, info = single.reset(seed=3) if user == 0 else single.reset()
        assert info["user_id"] == user
        np.testing.assert_array_equal(o["candidates"], vec_obs[0][user])
        for t in range(steps):
            if np.isnan(vec_rew[t][user]):
                break
            o, r, term, trunc, _ = single.step(np.arange(5))
            assert r == vec_rew[t][user]
            if not (term or trunc):
                np.testing.assert_array_equal(o["candidates"], vec_obs[t + 1][user])
            else:
                break


def test_finished_sessions_autoreset_on_the_next_step_with_the_next_user():
    env = make_vec(10, num_users=20, horizon=3)
    env.reset(seed=0)
    a = np.tile(np.arange(5), (10, 1))
    for _ in range(3):
        _, _, term, trunc, info = env.step(a)
    assert (term | trunc).all()
    _, reward, term, trunc, info = env.step(a)
    assert (reward == 0).all() and not (term | trunc).any() and not info["_rating"].any()
    np.testing.assert_array_equal(env.unwrapped.sim.slot_user, np.arange(10) + 10)


def test_world_save_and_load_resume_the_run_exactly(tmp_path):
    env = make_vec(SMALL["num_users"]).unwrapped
    env.reset(seed=5)
    a = np.tile(np.arange(5), (env.num_envs, 1))
    for _ in range(6):
        env.step(a)
    env.world.save(tmp_path / "w")
    slots = (env.sim.slot_user.copy(), env.sim.slot_step.copy(), env.sim.needs_reset.copy(),
             env.sim.candidates.copy())
    after = [env.step(a)[2] for _ in range(8)]
    expected = env.world.population.interests.copy()

    resumed = make_vec(SMALL["num_users"], world=simenv.world.World.load(tmp_path / "w")).unwrapped
    resumed._started = True
    resumed.sim.slot_user, resumed.sim.slot_step, resumed.sim.needs_reset, resumed.sim.candidates = slots
    again = [resumed.step(a)[2] for _ in range(8)]
    np.testing.assert_array_equal(np.array(after), np.array(again))
    np.testing.assert_array_equal(resumed.world.population.interests, expected)


@pytest.mark.parametrize(
    "action, error, words",
    [
        (np.zeros((4, 5)), TypeError, "dtype float64"),
        (np.zeros((4, 4), int), ValueError, "expected (4, 5)"),
        (np.tile([0, 1, 2, 3, 20], (4, 1)), ValueError, "out of range"),
        (np.tile([0, 1, 1, 3, 4], (4, 1)), ValueError, "repeats a position"),
    ],
)
def test_invalid_actions_are_rejected_with_a_message_naming_the_problem(action, error, words):
    env = make_vec(4)
    env.reset(seed=0)
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        env.step(action)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(user_model="psychic"), "user_model='psychic' is not known"),
        (dict(slate_size=30), "slate_size=30 > num_candidates=20"),
        (dict(num_users=0), "num_users=0: must be a positive integer"),
        (dict(horizon=-1), "horizon=-1"),
        (dict(reward="likes"), "reward='likes'"),
        (dict(num_usres=5), "did you mean 'num_users'"),
        (dict(dynamics={"drift_rat": 0.1}), "did you mean dynamics.'drift_rate'"),
        (dict(social_graph=nx.path_graph(10)), "missing users"),
    ],
)
def test_bad_configuration_names_the_field_and_the_fix(kwargs, words):
    with pytest.raises((ValueError, TypeError)) as err:
        make(**kwargs)
    assert words in str(err.value)


class AlwaysFirst:
    """A custom user model: always takes the top slot and rates it 4."""

    def respond(self, world, users, slates):
        n = len(users)
        return Responses(np.zeros(n, np.int32), np.full(n, 4.0, np.float32), np.ones(n, np.float32))


@pytest.mark.parametrize("spec", [AlwaysFirst(), "test_env:AlwaysFirst"])
def test_custom_user_models_plug_in_as_object_or_import_string(spec):
    env = make_vec(6, user_model=spec)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.tile(np.arange(5), (6, 1)))
    assert (info["choice"] == 0).all() and (reward == 1).all()


def test_the_embedded_model_is_also_reachable_through_its_entry_point():
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="recsim_llm.user_models")}
    assert "embedded" in names


def test_a_user_model_returning_impossible_answers_is_stopped():
    class Broken:
        def respond(self, world, users, slates):
            n = len(users)
            return Responses(np.full(n, 7, np.int32), np.full(n, 4.0, np.float32), np.ones(n, np.float32))

    env = make_vec(3, user_model=Broken())
    env.reset(seed=0)
    with pytest.raises(ValueError, match="choice outside"):
        env.step(np.tile(np.arange(5), (3, 1)))


def test_single_env_info_shows_the_titles_of_the_slate():
    env = make()
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.arange(5))
    titles = env.unwrapped.world.catalog.titles
    assert info["titles"] == [titles[i] for i in info["slate"]]


def test_a_movielens_format_world_runs_behind_the_same_api():
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "ml-tiny"
    env = gym.make_vec("RecSim-LLM-v0", num_envs=30, vectorization_mode="vector_entry_point",
                       dataset="movielens", dataset_path=str(fixture), num_candidates=10)
    obs, _ = env.reset(seed=0)
    assert env.unwrapped.world.num_users == 30 and env.unwrapped.world.num_items == 40
    _, reward, _, _, info = env.step(np.tile(np.arange(5), (30, 1)))
    assert reward.shape == (30,) and set(np.unique(info["rating"])) <= {0, 1, 2, 3, 4, 5}
