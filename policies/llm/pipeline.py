"""The training stages of an LLM recommender, shared by offline alignment (``experiments/align.py``)
and online refinement (``policies.online``): a model built here, SFT, a preference stage, and
reinforcement with the simulated user as the reward (GRPO).

Every stage writes a plain model folder (``FOLDER/model``) and resumes from its last Trainer
checkpoint (``FOLDER/checkpoints``) when stopped, so a study can hand one stage's output to the next
and a restarted study skips the stages that finished.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch


@dataclass
class ModelConfig:
    """A from-scratch model's shape (``agents.llm.model.LMConfig``), or a local model folder."""

    path: str | None = None  # a local Hugging Face causal LM folder; None builds one from the fields below
    vocab_size: int = 2000
    hidden_size: int = 64
    intermediate_size: int = 192
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    lora: bool = False  # train LoRA adapters (peft) instead of every weight: for larger models on a GPU
    lora_rank: int = 8


@dataclass
class StageConfig:
    epochs: float = 1.0
    lr: float = 1e-3
    batch_size: int = 16


class NonFiniteLoss(RuntimeError):
    """A training stage logged a NaN or infinite loss; its output must not be used."""


def gpu() -> bool:
    return torch.cuda.is_available()


def base_model(model: ModelConfig, texts: Sequence[str], folder: Path) -> Path:
    """``model.path``, or a new model (tokenizer trained on ``texts``) built in ``folder`` once."""
    from agents.llm.model import LMConfig, new_lm

    if model.path:
        return Path(model.path)
    if (folder / "config.json").exists():
        return folder
    return new_lm(list(texts), folder, LMConfig(vocab_size=model.vocab_size, hidden_size=model.hidden_size,
                                               intermediate_size=model.intermediate_size,
                                               num_layers=model.num_layers, num_heads=model.num_heads,
                                               num_kv_heads=model.num_kv_heads, max_positions=2048))


def lora_config(model: ModelConfig):
    if not model.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=model.lora_rank, lora_alpha=2 * model.lora_rank, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def load(folder: Path):
    """(model, tokenizer) of a local folder; bf16 on a GPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if gpu() else torch.float32
    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype), AutoTokenizer.from_pretrained(folder)


def last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def _finish(trainer, folder: Path) -> Path:
    """Check the logged losses and gradient norms (the Trainers run with ``logging_nan_inf_filter``
    off, so a NaN step is logged as NaN, not hidden), then save a plain model folder (LoRA merged) as ``folder/model``."""
    bad = [(k, e) for e in trainer.state.log_history for k in ("loss", "train_loss", "grad_norm")
           if k in e and not math.isfinite(float(e[k]))]
    if bad:
        key, entry = bad[0]
        raise NonFiniteLoss(f"{folder}: {key} {entry[key]} at step {entry.get('step')}; the stage's model was not "
                            "saved.")
    model = trainer.model
    if hasattr(model, "merge_and_unload"):  # LoRA: keep a plain model folder for the next stages
        model = model.merge_and_unload()
    model.save_pretrained(folder / "model")
    trainer.processing_class.save_pretrained(folder / "model")
    return folder / "model"


def sft_stage(start: Path, dataset: Any, folder: Path, stage: StageConfig, seed: int, model: ModelConfig) -> Path:
    """trl ``SFTTrainer`` from ``start`` on a prompt/completion dataset; returns ``folder/model``."""
    from policies.llm.sft import sft_config, sft_trainer

    if (folder / "model" / "config.json").exists():
        return folder / "model"
    lm, tok = load(start)
    args = sft_config(folder / "checkpoints", epochs=stage.epochs, learning_rate=stage.lr,
                      batch_size=stage.batch_size, seed=seed)
    trainer = sft_trainer(lm, tok, dataset, args, peft_config=lora_config(model))
    trainer.train(resume_from_checkpoint=last_checkpoint(folder / "checkpoints"))
    return _finish(trainer, folder)


def preference_stage(start: Path, dataset: Any, folder: Path, stage: StageConfig, seed: int, model: ModelConfig,
                     **loss: Any) -> Path:
    """``PreferenceTrainer`` from ``start`` (also the reference: its log-probabilities are taken before
    the first update) on a preference dataset; ``loss`` holds ``PreferenceConfig`` fields (``loss``,
    ``beta``, ``gamma``, ``alpha``, ``sft_weight``). Returns ``folder/model``; raises
    ``NonFiniteLoss`` (saving nothing) if a logged loss is NaN or infinite."""
    from policies.llm.trainer import PreferenceConfig, PreferenceTrainer

    if (folder / "model" / "config.json").exists():
        return folder / "model"
    lm, tok = load(start)
    on_gpu = gpu()
    args = PreferenceConfig(output_dir=str(folder / "checkpoints"), num_train_epochs=stage.epochs,
                            learning_rate=stage.lr, per_device_train_batch_size=stage.batch_size,
                            lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=10, save_strategy="epoch",
                            save_total_limit=1, report_to="none", disable_tqdm=True, seed=seed, data_seed=seed,
                            logging_nan_inf_filter=False,
                            use_cpu=not on_gpu, bf16=on_gpu, **loss)
    if model.lora:
        from peft import get_peft_model

        lm = get_peft_model(lm, lora_config(model))  # the reference log-probs are taken before training anyway
    trainer = PreferenceTrainer(model=lm, args=args, train_dataset=dataset, processing_class=tok)
    trainer.train(resume_from_checkpoint=last_checkpoint(folder / "checkpoints"))
    return _finish(trainer, folder)


def grpo_stage(start: Path, dataset: Any, reward: Any, folder: Path, stage: StageConfig, seed: int, model: ModelConfig,
               *, beta: float = 0.04, num_generations: int = 4, max_completion_length: int = 16,
               temperature: float = 1.0) -> Path:
    """trl ``GRPOTrainer`` from ``start``: sample ``num_generations`` answers per prompt, reward each
    with ``reward`` (a trl reward function, e.g. ``policies.llm.rewards.SimulatedUserReward``), and
    raise the likelihood of answers by their advantage A_i = (r_i - mean_group r) / std_group r, with a
    KL penalty ``beta`` to ``start`` (the reference: a frozen copy, or the adapters switched off under
    LoRA) so the policy keeps writing titles. Returns ``folder/model``; raises ``NonFiniteLoss``
    (saving nothing) if a logged loss is NaN or infinite.

    ``dataset`` has a ``prompt`` column (the LLaRA prompt) and the columns ``reward`` reads.
    ``stage.batch_size`` counts prompts per optimizer step, as in the other stages, so trl's batch is
    ``batch_size * num_generations`` completions: every group is whole (trl's divisibility rule holds
    for any batch size) and is sampled once per step, on-policy. Answers stop at the tokenizer's end
    token, as titles were trained (``" title<eos>"``); one still unfinished after
    ``max_completion_length`` tokens is rewarded as what it names, usually nothing.
    """
    from trl import GRPOConfig, GRPOTrainer

    from policies.llm.trainer import check_tokenizer

    if (folder / "model" / "config.json").exists():
        return folder / "model"
    lm, tok = load(start)
    check_tokenizer(lm, tok)  # trl stops sampling at the tokenizer's eos, so it must have one
    on_gpu = gpu()
    args = GRPOConfig(output_dir=str(folder / "checkpoints"), num_train_epochs=stage.epochs, learning_rate=stage.lr,
                      per_device_train_batch_size=stage.batch_size * num_generations,
                      num_generations=num_generations, max_completion_length=max_completion_length,
                      temperature=temperature, beta=beta, disable_dropout=True, gradient_checkpointing=False,
                      lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=1, save_strategy="epoch",
                      save_total_limit=1, report_to="none", disable_tqdm=True, seed=seed, data_seed=seed,
                      logging_nan_inf_filter=False, use_cpu=not on_gpu, bf16=on_gpu)
    trainer = GRPOTrainer(model=lm, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=tok,
                          peft_config=lora_config(model))
    trainer.train(resume_from_checkpoint=last_checkpoint(folder / "checkpoints"))
    return _finish(trainer, folder)
