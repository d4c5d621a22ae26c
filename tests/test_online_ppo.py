"""RLlib PPO as a reference method of the online study (kind "ppo"): it learns in a twin of the world
that keeps the study's clock, each round is served by the module trained after the round before, a
study of non-LLM methods needs no frozen baseline, and a study stopped during PPO's training resumes
to the same table, bit for bit."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ray.rllib")

from policies.online.study import (context, env_kwargs, load_study, logging_phase, run_method, run_study,  # noqa: E402
                                   world_of)

TINY = {"study": "online_refine", "name": "ppo_tiny", "seeds": [0], "world": {"users": 32, "items": 60},
        "scenario": {"kind": "interest_shift", "at_round": 1, "genre": "Sci-Fi", "share": 0.6, "strength": 0.8},
        "offline": {"log_steps": 4}, "rounds": 3, "steps_per_round": 2,
        "methods": [{"name": "ppo", "kind": "ppo", "ppo_epochs": 2}, {"name": "random", "kind": "random"}],
        "ray": {"backend": "local"}}


@pytest.fixture(scope="module")
def study(ray_local, tmp_path_factory):
    """The tiny PPO-vs-random study, run once for the module."""
    threads = torch.get_num_threads()
    base = tmp_path_factory.mktemp("online_ppo")
    cfg = load_study(TINY)
    here = os.getcwd()
    os.chdir(base)  # a relative run directory, as `recsim-llm run --out runs/x` gives
    try:
        results = run_study(cfg, Path("tiny"), progress=False)
    finally:
        os.chdir(here)
    out = base / "tiny"
    torch.set_num_threads(threads)
    return cfg, out, results["results"]


def module_weights(folder) -> list[torch.Tensor]:
    from ray.rllib.core.rl_module.rl_module import RLModule

    return list(RLModule.from_checkpoint(str(folder)).state_dict().values())


def test_every_round_of_ppo_and_random_has_finite_engagement_accuracy_and_bias(study):
    _, _, results = study
    for name in ("ppo", "random"):
        for x in results[name][0]:
            for key in ("ctr", "return", "HR@1", "NDCG@5", "exposure_gini", "homogenization", "trend_click_share"):
                assert np.isfinite(x["metrics"][key]), (name, x["round"], key)


def test_each_ppo_round_is_served_by_the_module_trained_after_the_round_before(study):
    _, out, results = study
    ppo, folder = results["ppo"][0], out / "seed_0" / "ppo"
    assert [x["learn"]["status"] for x in ppo] == ["trained", "trained", "none"]
    assert {x["policy"] for x in ppo} == {"rllib_slate"}
    assert [x["model"] for x in ppo] == [str(folder / p / "module") for p in ("pretrain", "round_00", "round_01")]
    assert (folder / "round_00" / "module").is_dir() and (folder / "round_01" / "module").is_dir()
    assert not any(torch.equal(a, b) for a, b in zip(module_weights(folder / "pretrain" / "module"),
                                                     module_weights(folder / "round_01" / "module")))


def test_the_twin_world_keeps_the_study_clock_so_it_meets_the_shift_at_the_same_tick(study):
    cfg, out, results = study
    pretrain = json.loads((out / "seed_0" / "ppo" / "pretrain" / "learn.json").read_text())
    assert pretrain["twin_clock"] == cfg.offline.log_steps
    for x in results["ppo"][0][:-1]:  # nobody leaves this world in 10 ticks, so no batch needs extra ticks
        assert x["learn"]["twin_clock"] == x["learn"]["clock"] == x["clock"]
        assert x["learn"]["examples"] == cfg.world.users * cfg.steps_per_round


def test_a_study_without_llm_methods_has_no_frozen_baseline_and_no_delta_columns(study):
    _, out, _ = study
    table = (out / "table.md").read_text()
    assert "| ppo |" in table and "| random |" in table
    assert "vs frozen" not in table and "paired by seed" not in table
    assert not (out / "seed_0" / "models").exists()  # no offline LLM was trained


def test_the_served_slate_is_the_mode_of_the_modules_slate_distribution(study):
    from ray.rllib.core.columns import Columns

    from policies import make_policy
    from simenv.vector import RecSimLLMVectorEnv

    cfg, out, _ = study
    policy = make_policy("rllib_slate", module=str(out / "seed_0" / "ppo" / "round_01" / "module"))
    env = RecSimLLMVectorEnv(num_envs=cfg.world.users, **{**env_kwargs(cfg, 0), "audit": False})
    obs, _ = env.reset(seed=0)
    policy.setup(env)
    with torch.no_grad():
        scores = policy.module.forward_inference({Columns.OBS: {k: torch.from_numpy(v) for k, v in obs.items()}})
    mode = policy.module.get_inference_action_dist_cls().from_logits(scores[Columns.ACTION_DIST_INPUTS])
    np.testing.assert_array_equal(policy.act(obs), mode.to_deterministic().sample().numpy())
    blind = RecSimLLMVectorEnv(num_envs=cfg.world.users, **{**env_kwargs(cfg, 0), "audit": False,
                                                           "candidate_features": False})
    with pytest.raises(ValueError, match="candidate_features=True"):
        policy.setup(blind)


def test_a_study_stopped_during_ppo_training_resumes_to_the_same_table_bit_for_bit(study, tmp_path):
    cfg, out, results = study
    again = tmp_path / "again"

    def stop(method: str, seed: int, round: int) -> None:
        if (method, round) == ("ppo", 1):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, again, on_round=stop, progress=False)
    # a stop during round 1's training: served and measured, not learned from, its checkpoint half written
    round1 = again / "seed_0" / "ppo" / "round_01"
    (round1 / "learn.json").unlink()
    shutil.rmtree(round1 / "module")
    resumed = run_study(cfg, again, resume=True, progress=False)["results"]
    assert (again / "table.md").read_text() == (out / "table.md").read_text()
    for name in results:
        assert json.dumps([x["metrics"] for x in resumed[name][0]]) == json.dumps([x["metrics"] for x in
                                                                                  results[name][0]])
    retrained, uninterrupted = module_weights(round1 / "module"), module_weights(out / "seed_0" / "ppo" / "round_01" /
                                                                                 "module")
    assert all(torch.equal(a, b) for a, b in zip(retrained, uninterrupted, strict=True))


def test_ppo_rounds_served_by_two_ray_actors_equal_those_served_in_one_process(study, tmp_path):
    """The module scores each user from that user's observation alone (``per_user``), and the twin does
    not depend on where the study serves, so sharding the served users over two actors changes nothing."""
    cfg, out, results = study
    c = dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, backend="ray", num_workers=2, cpus_per_worker=0.5))
    world = world_of(c, 0)
    _, start = logging_phase(c, 0, out / "seed_0" / "log")  # the log on disk: the same users at round 0
    rounds = run_method(c, c.methods[0], context(c, world, 0), world, start, tmp_path / "ppo")
    assert json.dumps([x["metrics"] for x in rounds]) == json.dumps([x["metrics"] for x in results["ppo"][0]])
