"""The preference trainer: responses scored with the prompt encoded once equal whole-sequence scores,
our DPO equals trl's DPOTrainer on the same batch and model, S-DPO with one negative equals DPO,
training moves the chosen response up, bad inputs are refused, and a stopped run resumes exactly."""
import copy
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402

from agents.llm.model import LMConfig, new_lm  # noqa: E402
from policies.llm.prompts import recommendation_prompt, response  # noqa: E402
from policies.llm.scoring import pad_responses, response_logps  # noqa: E402
from policies.llm.trainer import PreferenceConfig, PreferenceTrainer, collate  # noqa: E402

TITLES = ["Alien (1979)", "Aliens (1986)", "Star Wars (1977)", "Toy Story (1995)", "Heat (1995)", "Fargo (1996)",
          "The Usual Suspects (1995)", "Babe (1995)"]
TINY = LMConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)


def rows(n: int, negatives: int, seed: int = 0) -> list[dict]:
    """Prompts over random histories; the chosen title is always the first candidate (learnable)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        perm = rng.permutation(len(TITLES))
        cands = [TITLES[i] for i in perm[:1 + negatives]]
        out.append({"prompt": recommendation_prompt([TITLES[i] for i in perm[-2:]], cands),
                    "chosen": response(cands[0]), "rejected": [response(t) for t in cands[1:]],
                    "epsilon": [0.0] * negatives, "chosen_item": int(perm[0]),
                    "rejected_items": [int(i) for i in perm[1:1 + negatives]],
                    "rejected_source": ["random"] * negatives})
    return out


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    texts = [r["prompt"] + r["chosen"] for r in rows(64, 3)]
    return new_lm(texts, tmp_path_factory.mktemp("rec_lm"), TINY)


@pytest.fixture()
def model_and_tokenizer(lm_folder):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(lm_folder), AutoTokenizer.from_pretrained(lm_folder)


def config(tmp_path, **kw) -> PreferenceConfig:
    settings = dict(output_dir=str(tmp_path / "run"), use_cpu=True, per_device_train_batch_size=4, report_to="none",
                    learning_rate=1e-2, logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0)
    settings.update(kw)
    return PreferenceConfig(**settings)


def test_prompt_once_scores_equal_each_prompt_plus_response_run_alone(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = [tok(p)["input_ids"] for p in ("Alien and Heat", "a much longer prompt about Star Wars and Babe")]
    titles = [[" Alien (1979)", " Babe"], [" The Usual Suspects (1995)", " Heat"]]
    resp = [[tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in ts] for ts in titles]
    with torch.no_grad():
        got = response_logps(model.eval(), pad_responses(prompts, resp, tok.pad_token_id))
        for b in range(2):
            for j in range(2):
                logp = model(torch.tensor([prompts[b] + resp[b][j]])).logits.log_softmax(-1)[0]
                want = sum(float(logp[len(prompts[b]) - 1 + t, x]) for t, x in enumerate(resp[b][j]))
                assert got[b, j].item() == pytest.approx(want, abs=1e-4)


def test_gradients_reach_the_prompt_through_the_shared_states(model_and_tokenizer):
    model, tok = model_and_tokenizer
    batch = pad_responses([tok("Alien and Heat")["input_ids"]], [[tok(" Babe", add_special_tokens=False)["input_ids"]]],
                          tok.pad_token_id)
    response_logps(model, batch).sum().backward()
    prompt_rows = model.get_input_embeddings().weight.grad[tok("Alien and Heat")["input_ids"]]
    assert prompt_rows.abs().sum() > 0


def test_our_dpo_equals_trl_dpo_trainer_on_the_same_batch_and_model(model_and_tokenizer, tmp_path):
    from trl import DPOConfig, DPOTrainer

    model, tok = model_and_tokenizer
    data = rows(6, 1, seed=1)
    for r in data:  # make the policy differ from the reference, so the loss is not log 2
        r["chosen"] += ""
    policy = copy.deepcopy(model)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pairs = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"][0]}
                               for r in data])
    trl_trainer = DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(model), train_dataset=pairs,
                             processing_class=tok,
                             args=DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.3, use_cpu=True, bf16=False,
                                            gradient_checkpointing=False, report_to="none", max_length=None,
                                            per_device_train_batch_size=6))
    trl_batch = trl_trainer.data_collator([trl_trainer.train_dataset[i] for i in range(6)])
    trl_trainer.model.train()
    trl_loss = trl_trainer.compute_loss(trl_trainer.model, trl_batch)
    trl_margin = np.mean(trl_trainer._metrics["train"]["rewards/margins"])

    ours = PreferenceTrainer(model=copy.deepcopy(policy), ref_model=model, args=config(tmp_path, loss="dpo", beta=0.3),
                             train_dataset=Dataset.from_list(data), processing_class=tok)
    batch = collate([ours.train_dataset[i] for i in range(6)], tok.pad_token_id)
    ours.model.train()
    loss = ours.compute_loss(ours.model, batch)
    assert abs(loss.item() - np.log(2)) > 1e-3  # a real comparison, not two untrained log 2s
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert np.mean(ours._metrics["rewards/margins"]) == pytest.approx(trl_margin, abs=1e-5)


def test_sdpo_with_one_negative_equals_dpo_in_the_trainer(model_and_tokenizer, tmp_path):
    model, tok = model_and_tokenizer
    data = Dataset.from_list(rows(4, 1))
    losses = {}
    for name in ("dpo", "sdpo", "dmpo"):
        trainer = PreferenceTrainer(model=copy.deepcopy(model), args=config(tmp_path, loss=name, beta=0.5),
                                    train_dataset=data, processing_class=tok)
        trainer.train()
        losses[name] = trainer.state.log_history[-1]["train_loss"]
    assert losses["sdpo"] == pytest.approx(losses["dpo"], abs=1e-6)
    assert losses["dmpo"] == pytest.approx(losses["dpo"], abs=1e-6)


@pytest.mark.parametrize("loss", ["dpo", "cdpo", "sdpo", "dmpo", "simpo", "alpha_dpo"])
def test_every_loss_trains_the_chosen_title_above_the_rejected_ones(model_and_tokenizer, tmp_path, loss):
    model, tok = model_and_tokenizer
    data = Dataset.from_list(rows(32, 3))
    before = PreferenceTrainer(model=copy.deepcopy(model), args=config(tmp_path, loss="dpo"), train_dataset=data,
                               processing_class=tok).train_dataset["ref_logps"]
    trainer = PreferenceTrainer(model=model, args=config(tmp_path, loss=loss, num_train_epochs=12, beta=1.0),
                                train_dataset=data, processing_class=tok)
    trainer.train()
    after = trainer.train_dataset.remove_columns([c for c in ("ref_logps",) if c in trainer.train_dataset.column_names])
    from policies.llm.trainer import reference_logps
    now = np.array(reference_logps(trainer.model, after, tok.pad_token_id))
    margin_before = np.mean(np.array(before)[:, :1] - np.array(before)[:, 1:])
    margin_after = np.mean(now[:, :1] - now[:, 1:])
    assert margin_after > margin_before + 1.0


def test_a_mismatched_tokenizer_or_unknown_loss_is_refused(model_and_tokenizer, tmp_path):
    model, tok = model_and_tokenizer
    with pytest.raises(ValueError, match="unknown|loss"):
        config(tmp_path, loss="kto-ish")
    small = copy.deepcopy(model)
    small.resize_token_embeddings(10)
    with pytest.raises(ValueError, match="mismatched tokenizer and model"):
        PreferenceTrainer(model=small, args=config(tmp_path), train_dataset=Dataset.from_list(rows(2, 1)),
                          processing_class=tok)


def test_a_chosen_response_among_the_rejected_ones_is_refused(model_and_tokenizer, tmp_path):
    model, tok = model_and_tokenizer
    bad = rows(3, 2)
    bad[2]["rejected"][1] = bad[2]["chosen"]
    with pytest.raises(ValueError, match="2"):
        PreferenceTrainer(model=model, args=config(tmp_path), train_dataset=Dataset.from_list(bad),
                          processing_class=tok)


class _StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True


@pytest.mark.parametrize("loss", ["sdpo", "alpha_dpo"])
def test_a_stopped_run_resumes_from_its_checkpoint_to_the_same_weights(model_and_tokenizer, lm_folder, tmp_path, loss):
    model, tok = model_and_tokenizer
    data = Dataset.from_list(rows(16, 2))
    kw = dict(loss=loss, max_steps=6, save_strategy="steps", save_steps=100, lr_scheduler_type="linear")
    whole = PreferenceTrainer(model=copy.deepcopy(model), args=config(tmp_path / "a", **kw), train_dataset=data,
                              processing_class=tok)
    whole.train()
    stopped = PreferenceTrainer(model=copy.deepcopy(model), args=config(tmp_path / "b", **kw), train_dataset=data,
                                processing_class=tok, callbacks=[_StopAt(3)])
    stopped.train()
    assert stopped.state.global_step == 3
    resumed = PreferenceTrainer(model=AutoModelForCausalLM.from_pretrained(lm_folder), args=config(tmp_path / "b", **kw),
                                train_dataset=data.add_column("ref_logps", stopped.train_dataset["ref_logps"]),
                                processing_class=tok)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    if loss == "alpha_dpo":
        assert resumed.moments.state_dict() == pytest.approx(whole.moments.state_dict())
