"""A user LM trained here, without a model hub, imitates logged decisions and drives the env."""
import gymnasium as gym
import numpy as np
import pytest

import simenv  # noqa: F401
from agents.llm.model import LMConfig, new_lm
from agents.llm.prompts import ANSWER_CUE, option_labels
from agents.llm.records import Decisions, RecordingUser
from agents.llm.train import TrainConfig, train_user_lm
from policies import evaluate, make_policy
from simenv.cli import main

TINY_LM = LMConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1)


def rule_decisions(n: int, seed: int = 0) -> Decisions:
    """Cinephiles take option B and rate it 5; everyone else takes nothing."""
    rng = np.random.default_rng(seed)
    kind = rng.random(n) < 0.5
    persona = [f"You are a {'cinephile' if k else 'casual viewer'}.\n" for k in kind]
    titles = ["Alpha", "Beta", "Gamma", "Delta", "Omega", "Sigma"]
    context = []
    for _ in range(n):
        picks = rng.choice(titles, 3, replace=False)
        lines = [f"{a}. {t}" for a, t in zip(option_labels(3), picks)] + ["D. none of these"]
        context.append("Recommended for you now:\n" + "\n".join(lines) + f"\n{ANSWER_CUE}")
    return Decisions(persona, context, np.where(kind, 1, 3), np.where(kind, 5.0, 0.0).astype(np.float32), 3)


def test_recording_user_logs_the_prompt_and_answer_of_every_decision():
    rec = RecordingUser()
    env = gym.make_vec("RecSim-LLM-v0", num_envs=30, vectorization_mode="vector_entry_point", num_users=30,
                       num_items=60, embedding_model="random", slate_size=3, num_candidates=8, user_model=rec)
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    d = rec.decisions()
    assert len(d) == 30 and d.slate_size == 3
    np.testing.assert_array_equal(d.choice, np.where(info["choice"] < 0, 3, info["choice"]))
    np.testing.assert_array_equal(d.rating, info["rating"])
    titles = env.unwrapped.world.catalog.titles
    assert all(titles[i] in d.context[b] for b in range(30) for i in info["slate"][b])


def test_decisions_reject_out_of_range_choices_and_missing_ratings():
    with pytest.raises(ValueError, match="options are 0..3"):
        Decisions(["p"], ["c"], np.array([4]), np.array([0.0], np.float32), 3)
    with pytest.raises(ValueError, match="rating in 1..5"):
        Decisions(["p"], ["c"], np.array([1]), np.array([0.0], np.float32), 3)


def test_sft_then_dpo_teaches_a_from_scratch_lm_a_decision_rule(tmp_path):
    d = rule_decisions(400)
    texts = [p + c for p, c in zip(d.persona, d.context)]
    folder = new_lm(texts, tmp_path / "lm", TINY_LM)
    report = train_user_lm(folder, d, TrainConfig(sft_epochs=3, dpo_epochs=1, dpo_nll_weight=0.0, holdout=0.2,
                                                  lr=1e-2), log=lambda s: None)
    phases = report["phases"]
    assert phases["initial"]["choice_accuracy"] < 0.7
    assert phases["sft"]["choice_accuracy"] > 0.95
    assert phases["sft"]["rating_accuracy"] > 0.95  # cinephiles rate 5
    assert phases["dpo"]["choice_accuracy"] > 0.95
    assert phases["dpo"]["final_loss"] < np.log(2)  # DPO starts at log 2 (zero margin) and widens the margins
    assert (folder / "training.json").is_file()


def test_train_user_lm_command_makes_a_model_that_drives_single_and_vector_envs(tmp_path):
    out = tmp_path / "user_lm"
    args = ["train-user-lm", "--out", str(out), "--users", "40", "--items", "60", "--steps", "3",
            "--candidates", "8", "--slate-size", "3", "--embedding-model", "random", "--vocab-size", "400",
            "--hidden", "32", "--layers", "1", "--heads", "2", "--sft-epochs", "1", "--dpo-epochs", "1"]
    assert main(args) == 0
    assert main(args) == 2  # refuses to overwrite without --overwrite
    world = dict(num_users=20, num_items=60, embedding_model="random", slate_size=3, num_candidates=8,
                 user_model="llm", llm={"model": str(out), "batch_size": 8})
    env = gym.make("RecSim-LLM-v0", horizon=4, **world)
    env.reset(seed=0)
    for _ in range(4):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert not info["fallback"]
        if terminated or truncated:
            break
    venv = gym.make_vec("RecSim-LLM-v0", num_envs=10, vectorization_mode="vector_entry_point", **world)
    result = evaluate(make_policy("popular"), venv, steps=3)[0]
    assert result["user_steps"] > 0
    assert venv.unwrapped.sim.user_model.stats["unusable"] == 0
