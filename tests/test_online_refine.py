"""Online refinement inside the simulator (policies.online): an offline-aligned LLM recommender keeps
learning from simulated users whose interests shift; a stopped study resumes to the same table;
rounds without clicks and losses that blow up are handled, not crashed on."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trl")

from policies.online.methods import Context, GRPORefiner, IteratedPreference, MethodConfig  # noqa: E402
from policies.online.study import after_shift, load_study, run_study, world_of  # noqa: E402

TINY = Path(__file__).parent / "fixtures" / "online_tiny.yaml"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tiny study (one seed; frozen, iterated DPO, LinUCB), run once for the module."""
    import torch

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("online") / "tiny"
    cfg = load_study(TINY)
    results = run_study(cfg, out, progress=False)
    torch.set_num_threads(threads)
    return cfg, out, results["results"]


def context(cfg, out: Path, seed: int = 0, frozen: Path | None = None) -> Context:
    world = world_of(cfg, seed)
    import dataclasses

    return Context(list(world.catalog.titles), world.catalog.popularity, world.catalog.embeddings, world.num_users,
                   cfg.model, frozen or (out / f"seed_{seed}" / "models" / "DPO" / "model"), None,
                   dataclasses.asdict(cfg.serve), seed)


def decisions(out: Path, method: str = "frozen", round: int = 1) -> dict[str, np.ndarray]:
    with np.load(out / "seed_0" / method / f"round_{round:02d}" / "decisions.npz") as z:
        return {k: z[k] for k in z.files}


def same(a, b) -> bool:
    """Equal, NaN included (the metrics JSON writes NaN for what a policy cannot have)."""
    return json.dumps(a) == json.dumps(b)


def test_iterated_preference_optimization_beats_the_frozen_policy_after_the_shift(study):
    cfg, _, results = study
    frozen, iterated = results["frozen"][0], results["iterated DPO"][0]
    # round 0 is served by the same offline model in the same world: identical, draw for draw
    assert same(frozen[0]["metrics"], iterated[0]["metrics"])
    assert [x["learn"]["status"] for x in iterated] == ["trained", "trained", "none"]
    assert after_shift(iterated, cfg, "ctr") > after_shift(frozen, cfg, "ctr")


def test_every_round_reports_engagement_accuracy_bias_and_the_trend(study):
    cfg, out, results = study
    m = results["frozen"][0][1]["metrics"]
    for key in ("ctr", "mean_rating", "return", "HR@1", "NDCG@5", "popularity_lift", "exposure_gini",
                "homogenization", "trend_click_share", "trend_alignment"):
        assert np.isfinite(m[key]), key
    assert 0 <= m["ValidRatio"] <= 1 and 0 <= m["hallucination_rate"] <= 1  # from the serving probe
    assert np.isnan(results["LinUCB"][0][1]["metrics"]["ValidRatio"])  # it never writes titles
    # the shift moves tastes toward the trend between round 0 and round 1, whatever serves them
    align = [x["metrics"]["trend_alignment"] for x in results["frozen"][0]]
    assert align[1] > align[0]
    table = (out / "table.md").read_text()
    assert "| iterated DPO |" in table and "ΔCTR vs frozen" in table
    assert (out / "curves.png").stat().st_size > 10_000 and "curves.png" in (out / "report.md").read_text()


def test_a_stopped_study_resumes_to_the_same_table(study, tmp_path):
    cfg, out, results = study
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(out / "config.yaml", again / "config.yaml")
    shutil.copytree(out / "seed_0" / "log", again / "seed_0" / "log")
    shutil.copytree(out / "seed_0" / "models", again / "seed_0" / "models")

    def stop(method: str, seed: int, round: int) -> None:
        if (method, round) == ("iterated DPO", 1):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, again, resume=True, on_round=stop, progress=False)
    # a stop during round 1's training: served and measured, not learned from
    round1 = again / "seed_0" / "iterated_DPO" / "round_01"
    (round1 / "learn.json").unlink()
    shutil.rmtree(round1 / "model")
    resumed = run_study(cfg, again, resume=True, progress=False)["results"]
    assert (again / "table.md").read_text() == (out / "table.md").read_text()
    for name in results:
        assert same([x["metrics"] for x in resumed[name][0]], [x["metrics"] for x in results[name][0]])


def test_a_round_where_nobody_clicked_is_skipped_with_its_reason(study, tmp_path):
    cfg, out, _ = study
    d = decisions(out)
    d["choice"][:] = -1
    refiner = IteratedPreference(MethodConfig("iterated DPO", "iterated_po"), context(cfg, out), tmp_path)
    learned = refiner.learn(1, d, tmp_path / "round_01")
    assert learned["status"] == "skipped" and "no simulated user clicked" in learned["reason"]
    assert refiner.model_for(2) == refiner.ctx.frozen


def test_a_loss_that_turns_nan_keeps_the_last_good_model_and_says_so(study, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, out, _ = study
    broken = tmp_path / "broken"
    model = AutoModelForCausalLM.from_pretrained(out / "seed_0" / "models" / "DPO" / "model")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(out / "seed_0" / "models" / "DPO" / "model").save_pretrained(broken)
    refiner = IteratedPreference(MethodConfig("iterated DPO", "iterated_po"), context(cfg, out, frozen=broken),
                                 tmp_path / "method")
    folder = tmp_path / "method" / "round_00"
    learned = refiner.learn(0, decisions(out, round=0), folder)
    assert learned["status"] == "failed" and "nan" in learned["reason"].lower()
    assert json.loads((folder / "failed.json").read_text())["kept"] == str(broken)
    assert not (folder / "model").exists() and refiner.model_for(1) == broken


def test_grpo_learns_from_a_round_with_the_simulated_users_as_the_reward(study, tmp_path):
    from policies.llm.pipeline import StageConfig

    cfg, out, _ = study
    method = MethodConfig("GRPO", "grpo", max_prompts=8, num_generations=2,
                          train=StageConfig(epochs=1, lr=1e-3, batch_size=4))
    refiner = GRPORefiner(method, context(cfg, out), tmp_path)
    learned = refiner.learn(1, decisions(out), tmp_path / "round_01")
    assert learned["status"] == "trained" and learned["examples"] == 8
    counts = json.loads((tmp_path / "round_01" / "reward_counts.json").read_text())
    assert counts["answers"] == 16  # 8 prompts x 2 generations, each grounded and rewarded
    assert refiner.model_for(2) == tmp_path / "round_01" / "model"


@pytest.mark.parametrize("change, message", [
    ({"methods": [{"name": "frozen", "kind": "frozen"}, {"name": "x", "kind": "bandit"}]},
     r"methods\[1\].kind: 'bandit' is not one of \['frozen', 'iterated_po', 'grpo', 'icl'"),
    ({"methods": [{"name": "frozen", "kind": "frozen"}, {"name": "x", "kind": "iterated_po", "loss": "kto"}]},
     r"methods\[1\].loss: 'kto' is not one of \['dpo', 'cdpo'"),
    ({"scenario": {"kind": "meteor"}}, r"scenario.kind: 'meteor' is not one of \['interest_shift', 'new_items'"),
    ({"methods": [{"name": "x", "kind": "iterated_po"}]}, "include a method of kind 'frozen'"),
    ({"scenario": {"at_round": 0}}, "scenario.at_round=0"),
])
def test_a_config_with_an_unknown_method_loss_or_scenario_names_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        load_study({"study": "online_refine", **change})


def test_the_in_context_policy_writes_each_users_latest_decisions_before_the_prompt(study):
    import gymnasium as gym

    import simenv  # noqa: F401
    from policies import make_policy
    from policies.llm.recommender import LLMRecommenderPolicy
    from policies.online.study import env_kwargs

    cfg, out, _ = study
    model = str(out / "seed_0" / "models" / "SFT" / "model")
    env = gym.make_vec("RecSim-LLM-v0", num_envs=cfg.world.users, vectorization_mode="vector_entry_point",
                       **{**env_kwargs(cfg, 0), "audit": False})
    obs, _ = env.reset(seed=0)
    icl, plain = make_policy("llm_icl", model=model, demonstrations=2), LLMRecommenderPolicy(model)
    icl.setup(env)
    plain.setup(env)
    assert icl.prompts(obs) == plain.prompts(obs)  # no decision yet: nothing to demonstrate
    actions = icl.act(obs)
    next_obs, reward, _, _, info = env.step(actions)
    icl.update(obs, actions, reward, info)
    u = int(np.flatnonzero(info["clicked"])[0])
    taken = icl.catalog_titles[info["item"][u]]
    prompt = icl.prompts(next_obs)[u]
    assert prompt.startswith("Shown: ") and f"Chosen: {taken}." in prompt.split("\n")[0]
    assert prompt.endswith(plain.prompts(next_obs)[u])
    without = make_policy("llm_icl", model=model, demonstrations=0)
    without.setup(env)
    without.update(obs, actions, reward, info)
    assert without.prompts(next_obs) == plain.prompts(next_obs)


def test_rounds_continue_the_world_exactly_where_the_last_one_stopped():
    from simenv.rollout import ShardedRollout

    kwargs = dict(num_users=40, num_items=80, num_candidates=10, slate_size=3, horizon=50, candidate_features=False,
                  dynamics={"social_interval": 2})
    whole = ShardedRollout(kwargs, "popular", num_workers=2, seed=3, backend="local").run(7)
    first = ShardedRollout(kwargs, "popular", num_workers=2, seed=3, backend="local")
    first.open()
    a, decisions = first.advance(3, record=True)
    states = first.states()
    second = ShardedRollout(kwargs, "popular", num_workers=2, seed=3, backend="local")
    second.open(states)
    b, _ = second.advance(4)
    assert np.array_equal(np.concatenate([a.clicks, b.clicks]), whole.steps["clicks"])
    assert np.array_equal(a.exposure + b.exposure, whole.exposure)
    assert len(decisions["user"]) == 3 * 40 and (decisions["clock"] == np.repeat([0, 1, 2], 40)).all()
    assert ((decisions["choice"] >= 0).sum()) == a.clicks.sum()


def test_rounds_on_two_ray_actors_serve_the_same_users_the_same_way_as_one_process(study, ray_local):
    """The loop on Ray: the frozen LLM ranks each user from that user's prompt alone, so sharding the
    users over two actors changes nothing (the probe's generator is per replica, so it is off here)."""
    import dataclasses

    from policies.online.study import run_method

    cfg, out, _ = study
    runs = {}
    for backend, workers in (("local", 1), ("ray", 2)):
        c = dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, backend=backend, num_workers=workers,
                                                             cpus_per_worker=0.5),
                                serve=dataclasses.replace(cfg.serve, probe=0.0), rounds=2)
        from policies.online.study import logging_phase

        ctx = context(c, out)
        _, start = logging_phase(c, 0, out / "seed_0" / "log")
        runs[backend] = run_method(c, MethodConfig("frozen", "frozen"), ctx, world_of(c, 0), start,
                                   out / f"frozen_{backend}")
    assert same([x["metrics"] for x in runs["ray"]], [x["metrics"] for x in runs["local"]])


def test_the_round_timing_benchmark_splits_every_method_s_round_into_its_phases(study):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_online", Path(__file__).parents[1] / "experiments" /
                                                  "bench_online.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, _, results = study
    text = bench.timing_table(results)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["frozen"].split(" | ")[5] == "1.00"  # the baseline of the ratio column
    trained = float(rows["iterated DPO"].split(" | ")[3])
    assert trained > 0 and float(rows["LinUCB"].split(" | ")[3]) == 0  # only the LLM trainer trains
