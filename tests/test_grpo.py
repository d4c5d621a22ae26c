"""Reinforcement of an LLM recommender with the simulated user as the reward (trl's GRPO): the reward
grounds an answer as the generating recommender does and pays the user's value of the item named, and
a GRPO stage moves a tiny model toward the answer the user values, saves it, and is skipped when done."""
import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from agents.llm.model import LMConfig, new_lm
from policies.llm.pipeline import ModelConfig, StageConfig, grpo_stage, last_checkpoint, load, sft_stage
from policies.llm.prompts import recommendation_prompt, response
from policies.llm.rewards import SimulatedUserReward
from policies.llm.scoring import pad_responses, response_logps

CATALOG = ["Usual Suspects, The (1995)", "Heat (1995)", "Jaws (1975)", "Fargo (1996)", "Alien (1979)"]


def test_an_answer_earns_its_candidates_value_or_the_penalty_for_naming_another_item_or_nothing():
    reward = SimulatedUserReward(CATALOG)
    answers = [" The Usual Suspects (1995)", " fargo", " Alien (1979)", " Star Wars (1977)"]
    rewards = reward(prompts=["..."] * 4, completions=answers, candidate_items=[[3, 0, 1]] * 4,
                     candidate_values=[[0.1, 0.7, 0.2]] * 4)
    assert rewards == pytest.approx([0.7, 0.1, -0.5, -1.0])  # display title; case and year do not matter
    assert reward.counts == {"answers": 4, "valid": 2, "off_candidate": 1, "hallucinated": 1}
    reward(prompts=["..."], completions=[[{"role": "assistant", "content": "Heat"}]], candidate_items=[[3, 0, 1]],
           candidate_values=[[0.1, 0.7, 0.2]])
    assert reward.counts == {"answers": 5, "valid": 3, "off_candidate": 1, "hallucinated": 1}  # counts accumulate


def test_the_penalties_and_the_name_trl_logs_the_reward_under_are_settings():
    reward = SimulatedUserReward(CATALOG, off_candidate_penalty=-0.2, hallucination_penalty=-3.0, name="clicks")
    assert reward.__name__ == "clicks"
    assert reward(prompts=["..."] * 2, completions=["Jaws", "Ghost"], candidate_items=[[0, 1]] * 2,
                  candidate_values=[[0.5, 0.5]] * 2) == pytest.approx([-0.2, -3.0])


def test_candidate_columns_that_do_not_match_the_completions_are_an_error():
    with pytest.raises(ValueError, match="one row of C items and C values per completion"):
        SimulatedUserReward(CATALOG)(prompts=["..."], completions=["Jaws"], candidate_items=[[0, 1]],
                                     candidate_values=[[0.5]])


# A tiny recommender, SFT'd to name any candidate, then reinforced by a user who values only Fargo.
TITLES = ["Alien", "Heat", "Jaws", "Fargo", "Brazil", "Casino", "Ronin", "Rocky"]
PREFERRED = 3
REINFORCE = StageConfig(epochs=1, lr=1e-2, batch_size=4)  # 4 prompts x 4 answers a step, 4 steps


def _decisions(n: int = 16, seed: int = 0) -> list[tuple[str, list[int]]]:
    """(prompt, 4 candidate ids, Fargo among them) per decision, one history title each."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        others = rng.choice([i for i in range(len(TITLES)) if i != PREFERRED], 4, replace=False)
        candidates = rng.permutation([*others[:3], PREFERRED]).tolist()
        out.append((recommendation_prompt([TITLES[others[3]]], [TITLES[c] for c in candidates]), candidates))
    return out


def _answer_logps(folder, decisions) -> torch.Tensor:
    """(N, C) log p(" title<eos>" | prompt) of each decision's candidates."""
    lm, tok = load(folder)
    prompts = tok([p for p, _ in decisions])["input_ids"]
    answers = [[tok(response(TITLES[c]), add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in cands]
               for _, cands in decisions]
    with torch.no_grad():
        return response_logps(lm, pad_responses(prompts, answers, tok.pad_token_id))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A model this small trains fastest on one thread; on a busy 2-core machine a second one mostly waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reinforced(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    decisions = _decisions()
    texts = [p + response(TITLES[c]) for p, cands in decisions for c in cands]
    base = new_lm(texts, root / "base", LMConfig(vocab_size=600, hidden_size=32, intermediate_size=64, num_layers=1,
                                                 num_heads=2, num_kv_heads=1))
    sft = datasets.Dataset.from_dict({"prompt": [p for p, cands in decisions for _ in cands],
                                      "completion": [response(TITLES[c]) for _, cands in decisions for c in cands]})
    start = sft_stage(base, sft, root / "sft", StageConfig(epochs=10, lr=2e-2, batch_size=16), 0, ModelConfig())
    rows = datasets.Dataset.from_dict({
        "prompt": [p for p, _ in decisions], "candidate_items": [cands for _, cands in decisions],
        "candidate_values": [[1.0 if c == PREFERRED else 0.0 for c in cands] for _, cands in decisions]})
    reward = SimulatedUserReward(TITLES)
    folder = root / "grpo"
    model = grpo_stage(start, rows, reward, folder, REINFORCE, 0, ModelConfig(), max_completion_length=8)
    return dict(start=start, model=model, folder=folder, rows=rows, reward=reward, decisions=decisions)


def test_grpo_moves_the_answers_likelihood_toward_the_candidate_the_simulated_user_values(reinforced):
    before = _answer_logps(reinforced["start"], reinforced["decisions"])
    after = _answer_logps(reinforced["model"], reinforced["decisions"])
    rows = torch.arange(len(before))
    preferred = torch.tensor([cands.index(PREFERRED) for _, cands in reinforced["decisions"]])
    others = torch.ones_like(before, dtype=torch.bool)
    others[rows, preferred] = False

    def share(logps):  # log of Fargo's share of the probability given to the candidates
        return logps[rows, preferred] - torch.logsumexp(logps, dim=1)

    # seeds 0-5 give +0.73..0.84 nats and +0.51..0.60 of log-share; a user valuing every candidate but Fargo
    # gives -0.88..+0.24 and -0.55..+0.18: answering some candidate at all pays, so Fargo alone can rise a little
    assert (after[rows, preferred] - before[rows, preferred]).mean() > 0.5
    assert (share(after) - share(before)).mean() > 0.3
    assert after[others].mean() < before[others].mean()
    assert reinforced["reward"].counts["answers"] == 4 * 16  # 4 answers to each of the 16 prompts, once


def test_the_stage_saves_a_model_logs_finite_losses_and_the_reward_by_name(reinforced):
    assert reinforced["model"] == reinforced["folder"] / "model" and (reinforced["model"] / "config.json").exists()
    checkpoint = Path(last_checkpoint(reinforced["folder"] / "checkpoints"))
    steps = [e for e in json.loads((checkpoint / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(steps) == 4 and all(math.isfinite(e["loss"]) for e in steps)
    assert all("rewards/simulated_user/mean" in e and "simulated_user/valid_ratio" in e for e in steps)
    # answers stop at the end token, as titles were trained, instead of running to max_completion_length
    assert np.mean([e["completions/clipped_ratio"] for e in steps]) < 0.5
    assert any(e["kl"] > 0 for e in steps)  # the start model is the reference


def test_a_finished_stage_is_skipped(reinforced):
    weights = reinforced["model"] / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    reward = SimulatedUserReward(TITLES)
    again = grpo_stage(reinforced["start"], reinforced["rows"], reward, reinforced["folder"], REINFORCE, 0,
                       ModelConfig())
    assert again == reinforced["model"] and weights.stat().st_mtime_ns == stamp
    assert reward.counts["answers"] == 0  # nothing was generated


def test_lora_adapters_reinforce_through_the_same_stage_and_merge_into_a_plain_model(reinforced, tmp_path):
    from safetensors.numpy import load_file

    model = grpo_stage(reinforced["start"], reinforced["rows"], SimulatedUserReward(TITLES), tmp_path,
                       REINFORCE, 0, ModelConfig(lora=True, lora_rank=2), max_completion_length=8)
    assert not (model / "adapter_config.json").exists()
    start, tuned = (load_file(folder / "model.safetensors") for folder in (reinforced["start"], model))
    changed = {k for k in start if not (start[k] == tuned[k]).all()}
    assert changed and all("proj" in k for k in changed)  # merged adapters moved linear layers only
