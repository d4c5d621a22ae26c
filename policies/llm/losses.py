"""Preference losses that align an LLM recommender: one chosen response against K rejected ones.

Every loss reads the same tensors, for a batch of B prompts, each with 1 chosen and K >= 1 rejected
responses (column 0 is the chosen one, columns 1..K the rejected ones):

    logps      (B, 1+K)  summed log π_θ(y|x) of each response under the policy
    ref_logps  (B, 1+K)  the same under the frozen reference model
    lengths    (B, 1+K)  tokens in each response (> 0)
    epsilon    (B, K)    per-pair label-smoothing factor, in [0, 0.5)

with the implicit reward r(y) = logps − ref_logps (β left out) and the length-averaged log-prob
ℓ̄(y) = logps / lengths. Each loss returns the per-example loss, shape (B,); the trainer averages.

Pairwise losses (dpo, cdpo, simpo, alpha_dpo) are *split into pairs* when K > 1: the example's loss
is the mean over the K pairs (chosen, rejected_k). That is not a listwise loss; sdpo and dmpo are
the two that score all K negatives jointly.

``preference_loss`` picks a loss by ``LossConfig.name`` and returns trl-style metrics beside it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LOSS_NAMES = ("dpo", "cdpo", "sdpo", "dmpo", "simpo", "alpha_dpo")

# At the first step the policy is the reference, every α-DPO gap is exactly 0 and so is its std;
# the floor turns that 0/0 into 0 (margin γ/β, i.e. SimPO) instead of NaN.
_GAP_STD_FLOOR = 1e-8


def _split(x: Tensor) -> tuple[Tensor, Tensor]:
    """Column 0 as (B, 1), so that it broadcasts against the K rejected columns (B, K)."""
    return x[:, :1], x[:, 1:]


def dpo_loss(logps: Tensor, ref_logps: Tensor, beta: float) -> Tensor:
    """DPO (Rafailov et al. 2023), split into pairs: L = −log σ(β·(r_w − r_l)).

    Args:
        logps, ref_logps: (B, 1+K) summed log-probs under the policy and the reference.
        beta: β > 0, the strength of the implicit KL penalty towards the reference.

    Returns:
        (B,) the loss of each example, the mean over its K pairs.
    """
    r_w, r_l = _split(logps - ref_logps)
    return -F.logsigmoid(beta * (r_w - r_l)).mean(dim=1)


def cdpo_loss(logps: Tensor, ref_logps: Tensor, epsilon: Tensor, beta: float) -> Tensor:
    """Conservative DPO with one smoothing factor per pair, split into pairs.

        L = −(1 − ε)·log σ(βΔ) − ε·log σ(−βΔ),   Δ = r_w − r_l

    ε is the probability that the pair's label is flipped. Mitchell's cDPO note uses one ε for the
    whole data set; RosePO (Liao et al. 2024, arXiv 2410.12519) predicts a personalised ε_i per pair
    with a preference oracle. Here the oracle can be the simulator's own choice model,
    ε = σ(v(y_l) − v(y_w)) clipped to [0, 0.5). RosePO's code is not public: this is a reconstruction
    from the paper. trl 1.x takes one scalar ``label_smoothing`` per run, nothing per example.

    ε = 0 is DPO. Unlike DPO the loss has a finite optimum, σ(βΔ) = 1 − ε, so its gradient pushes Δ
    back down once the pair is that confidently ordered; ε = 0.5 makes the pair indifferent.

    Args:
        logps, ref_logps: (B, 1+K) summed log-probs under the policy and the reference.
        epsilon: (B, K) smoothing factor of each (chosen, rejected_k) pair.
        beta: β > 0.

    Returns:
        (B,) the loss of each example, the mean over its K pairs.
    """
    r_w, r_l = _split(logps - ref_logps)
    z = beta * (r_w - r_l)
    return (-(1 - epsilon) * F.logsigmoid(z) - epsilon * F.logsigmoid(-z)).mean(dim=1)


def sdpo_loss(logps: Tensor, ref_logps: Tensor, beta: float) -> Tensor:
    """S-DPO (Chen et al., NeurIPS 2024, arXiv 2406.09215), all K negatives at once:

        L = −log σ(−log Σ_k exp(β·(r_k − r_w))) = softplus(logsumexp_k β·(r_k − r_w))

    The gradient on negative k is proportional to softmax_k(β·r_k): the negatives the policy ranks
    highest (the hard ones) get the most push. K = 1 is DPO exactly.

    Args:
        logps, ref_logps: (B, 1+K) summed log-probs under the policy and the reference.
        beta: β > 0.

    Returns:
        (B,) the loss of each example.
    """
    r_w, r_l = _split(logps - ref_logps)
    return F.softplus(torch.logsumexp(beta * (r_l - r_w), dim=1))


def dmpo_loss(logps: Tensor, ref_logps: Tensor, beta: float) -> Tensor:
    """DMPO (Bai et al., CIKM 2024, arXiv 2405.16127), the chosen against the mean negative:

        L = −log σ(β·r_w − (β/K)·Σ_k r_k)

    Every negative weighs 1/K, whatever its reward (compare S-DPO's softmax). K = 1 is DPO.

    Args:
        logps, ref_logps: (B, 1+K) summed log-probs under the policy and the reference.
        beta: β > 0.

    Returns:
        (B,) the loss of each example.
    """
    r_w, r_l = _split(logps - ref_logps)
    return -F.logsigmoid(beta * (r_w.squeeze(1) - r_l.mean(dim=1)))


def simpo_loss(logps: Tensor, lengths: Tensor, beta: float, gamma: float) -> Tensor:
    """SimPO (Meng et al. 2024, arXiv 2405.14734), reference-free and length-normalised:

        L = −log σ(β·(ℓ̄_w − ℓ̄_l) − γ),   ℓ̄ = logps / lengths

    split into pairs when K > 1.

    Args:
        logps: (B, 1+K) summed log-probs under the policy.
        lengths: (B, 1+K) tokens in each response.
        beta: β > 0, the scale of the reward β·ℓ̄.
        gamma: γ >= 0, the target reward margin in reward units (the authors' code takes
            ``gamma_beta_ratio`` = γ/β instead).

    Returns:
        (B,) the loss of each example, the mean over its K pairs.
    """
    avg_w, avg_l = _split(logps / lengths)
    return -F.logsigmoid(beta * (avg_w - avg_l) - gamma).mean(dim=1)


def alpha_dpo_gap(logps: Tensor, ref_logps: Tensor, lengths: Tensor) -> Tensor:
    """α-DPO's policy-reference gap of each pair, on length-averaged log-probs:

        gap = (ℓ̄_w − ℓ̄_l) − (ℓ̄^ref_w − ℓ̄^ref_l)

    Args:
        logps, ref_logps: (B, 1+K) summed log-probs under the policy and the reference.
        lengths: (B, 1+K) tokens in each response.

    Returns:
        (B, K) the gap of each (chosen, rejected_k) pair.
    """
    avg_w, avg_l = _split(logps / lengths)
    ref_w, ref_l = _split(ref_logps / lengths)
    return (avg_w - avg_l) - (ref_w - ref_l)


def alpha_dpo_loss(
    logps: Tensor,
    ref_logps: Tensor,
    lengths: Tensor,
    beta: float,
    gamma: float,
    alpha: float,
    gap_mean: float,
    gap_std: float,
) -> Tensor:
    """α-DPO (Wu et al., ICML 2025, arXiv 2410.10148), as ``AlphaDPOTrainer.dpo_loss`` of the
    authors' code (junkangwu/alpha-DPO), split into pairs:

        margin = stopgrad(α·(gap − μ)/σ + γ/β)
        L = −log σ(β·((ℓ̄_w − ℓ̄_l) − margin))

    with gap from ``alpha_dpo_gap`` and μ, σ the running moments of the gap (``GapMoments``). The
    margin is a per-pair target that adapts to how far the policy has moved from the reference; it
    carries no gradient, so the policy is trained as SimPO with that margin. α = 0 is SimPO.

    Args:
        logps, ref_logps: (B, 1+K) summed log-probs under the policy and the reference.
        lengths: (B, 1+K) tokens in each response.
        beta: β > 0.
        gamma: γ >= 0, the base reward margin in reward units (the authors' ``gamma_beta_ratio`` is γ/β).
        alpha: α >= 0, the weight of the normalised gap in the margin.
        gap_mean, gap_std: μ and σ, e.g. from ``GapMoments.update``.

    Returns:
        (B,) the loss of each example, the mean over its K pairs.
    """
    avg_w, avg_l = _split(logps / lengths)
    gap = alpha_dpo_gap(logps, ref_logps, lengths)
    margin = (alpha * (gap - gap_mean) / max(gap_std, _GAP_STD_FLOOR) + gamma / beta).detach()
    return -F.logsigmoid(beta * ((avg_w - avg_l) - margin)).mean(dim=1)


class GapMoments:
    """Running mean μ and std σ of α-DPO's gap: exponential moving averages of batch moments.

        μ ← d·μ + (1 − d)·mean(gap),   σ ← d·σ + (1 − d)·std(gap)

    over all B·K pairs of a batch, std Bessel-corrected (``torch.std``, as in the authors' code).
    The first batch sets μ and σ to its own moments: the authors start both at 0, which makes σ ten
    times too small on the first step (d = 0.9) and inflates the normalised gap accordingly.

    Args:
        decay: d in (0, 1), the weight of the past.
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"GapMoments(decay={decay}): must be in (0, 1).")
        self.decay = decay
        self.mean: float | None = None
        self.std: float | None = None

    def update(self, gap: Tensor) -> tuple[float, float]:
        """Fold one batch's gap (any shape, at least 2 values) into the moments; return (μ, σ).

        Update first, then return: the batch is normalised by moments that include it, as in the
        authors' code (``update_and_sync_ref_mean_std`` runs before the normalisation), and the
        first batch has no earlier moments to use.
        """
        if gap.numel() < 2:
            raise ValueError(
                f"GapMoments.update: got {gap.numel()} gap value(s); a std needs at least 2. "
                "Use batches with B·K >= 2 pairs."
            )
        gap = gap.detach()
        batch_mean, batch_std = gap.mean().item(), gap.std().item()
        if self.mean is None or self.std is None:
            self.mean, self.std = batch_mean, batch_std
        else:
            self.mean = self.decay * self.mean + (1 - self.decay) * batch_mean
            self.std = self.decay * self.std + (1 - self.decay) * batch_std
        return self.mean, self.std

    def state_dict(self) -> dict[str, float | None]:
        """The moments, to save beside a checkpoint (None before the first update)."""
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        """Continue the EMA of a saved run from its ``state_dict``."""
        self.mean, self.std = state["mean"], state["std"]


@dataclass(frozen=True)
class LossConfig:
    """Which preference loss trains the recommender, and its hyper-parameters (trl's names)."""

    name: str = "dpo"  # one of LOSS_NAMES
    beta: float = 0.1  # β: scale of the implicit reward in the sigmoid (for DPO-style losses, the KL strength)
    gamma: float = 0.5  # γ: target reward margin of simpo and alpha_dpo, in reward units (not γ/β)
    alpha: float = 0.2  # α: weight of the normalised policy-reference gap in alpha_dpo's margin (0: simpo)
    ema_decay: float = 0.9  # decay of alpha_dpo's running gap moments (GapMoments)

    def __post_init__(self) -> None:
        if self.name not in LOSS_NAMES:
            raise ValueError(f"loss.name={self.name!r}: unknown; use one of {', '.join(LOSS_NAMES)}.")
        if not self.beta > 0:
            raise ValueError(f"loss.beta={self.beta}: must be > 0.")
        for field in ("gamma", "alpha"):
            if getattr(self, field) < 0:
                raise ValueError(f"loss.{field}={getattr(self, field)}: must be >= 0.")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"loss.ema_decay={self.ema_decay}: must be in (0, 1).")

    @property
    def needs_reference(self) -> bool:
        """Whether the loss reads ``ref_logps`` (every one but simpo)."""
        return self.name != "simpo"


def _check_inputs(
    config: LossConfig,
    logps: Tensor,
    ref_logps: Tensor | None,
    lengths: Tensor | None,
    epsilon: Tensor | None,
    moments: GapMoments | None,
) -> None:
    if logps.dim() != 2 or logps.shape[1] < 2:
        raise ValueError(
            f"logps has shape {tuple(logps.shape)}: expected (B, 1+K) with K >= 1, column 0 the chosen "
            "response and columns 1..K the rejected ones."
        )
    b, k = logps.shape[0], logps.shape[1] - 1
    for arg, value, expected in (
        ("ref_logps", ref_logps, (b, 1 + k)),
        ("lengths", lengths, (b, 1 + k)),
        ("epsilon", epsilon, (b, k)),
    ):
        if value is not None and tuple(value.shape) != expected:
            raise ValueError(
                f"{arg} has shape {tuple(value.shape)} but logps has shape {tuple(logps.shape)}: "
                f"expected {arg} of shape {expected}."
            )
    if config.needs_reference and ref_logps is None:
        raise ValueError(
            f"loss {config.name!r} needs ref_logps (log-probs under the frozen reference model); "
            "pass them, or use 'simpo', which is reference-free."
        )
    if config.name in ("simpo", "alpha_dpo"):
        if lengths is None:
            raise ValueError(f"loss {config.name!r} needs lengths (tokens per response) to length-average logps.")
        if (lengths <= 0).any():
            raise ValueError(f"lengths must be > 0, got min {lengths.min().item()}: count the response's tokens.")
    if config.name == "cdpo":
        if epsilon is None:
            raise ValueError("loss 'cdpo' needs epsilon (B, K), the smoothing factor of each pair.")
        # ε > 0.5 says the rejected response is the better one: the columns are swapped upstream.
        if ((epsilon < 0) | (epsilon > 0.5)).any():
            raise ValueError(
                f"epsilon must lie in [0, 0.5], got range [{epsilon.min().item()}, {epsilon.max().item()}]; "
                "above 0.5 the rejected response is the preferred one, so swap it into column 0."
            )
    if config.name == "alpha_dpo":
        if moments is None:
            raise ValueError(
                "loss 'alpha_dpo' needs moments: create GapMoments(config.ema_decay) once and pass it "
                "to every call of the run."
            )
        if moments.decay != config.ema_decay:
            raise ValueError(
                f"moments.decay={moments.decay} differs from config.ema_decay={config.ema_decay}: "
                "create the moments as GapMoments(config.ema_decay)."
            )


def _reward_metrics(rewards: Tensor, logps: Tensor) -> dict[str, float]:
    """trl's DPO metrics from rewards (B, 1+K); margins and accuracies are over all B·K pairs."""
    chosen, rejected = _split(rewards.detach())
    margins = chosen - rejected
    logps_w, logps_l = _split(logps.detach())
    return {
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/margins": margins.mean().item(),
        "rewards/accuracies": (margins > 0).float().mean().item(),
        "logps/chosen": logps_w.mean().item(),
        "logps/rejected": logps_l.mean().item(),
    }


def preference_loss(
    config: LossConfig,
    logps: Tensor,
    ref_logps: Tensor | None,
    lengths: Tensor | None,
    epsilon: Tensor | None,
    moments: GapMoments | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The loss ``config.name`` of a batch, and trl-style metrics of it.

    Each loss reads only what it needs: ref_logps (all but simpo), lengths (simpo, alpha_dpo),
    epsilon (cdpo), moments (alpha_dpo); the others may be None, but any given is shape-checked.
    For alpha_dpo every call updates ``moments``; pass a copy on evaluation batches to keep them
    out of the training EMA.

    Metrics (means, detached): ``rewards/chosen`` β·r_w, ``rewards/rejected`` β·r_l over all
    negatives, ``rewards/margins`` β·(r_w − r_l) and ``rewards/accuracies`` the share of pairs with
    r_w > r_l, ``logps/chosen`` and ``logps/rejected``. simpo has no reference, so its rewards are β·ℓ̄.

    Args:
        config: the loss and its hyper-parameters.
        logps: (B, 1+K) summed log-probs under the policy (column 0 chosen).
        ref_logps: (B, 1+K) the same under the reference, or None for simpo.
        lengths: (B, 1+K) tokens in each response, or None.
        epsilon: (B, K) smoothing factor of each pair in [0, 0.5], or None.
        moments: alpha_dpo's running gap moments, built as ``GapMoments(config.ema_decay)``.

    Returns:
        (B,) the per-example losses, and the metrics.
    """
    _check_inputs(config, logps, ref_logps, lengths, epsilon, moments)
    beta = config.beta
    match config.name:
        case "dpo":
            losses = dpo_loss(logps, ref_logps, beta)
        case "cdpo":
            losses = cdpo_loss(logps, ref_logps, epsilon, beta)
        case "sdpo":
            losses = sdpo_loss(logps, ref_logps, beta)
        case "dmpo":
            losses = dmpo_loss(logps, ref_logps, beta)
        case "simpo":
            losses = simpo_loss(logps, lengths, beta, config.gamma)
        case "alpha_dpo":
            gap_mean, gap_std = moments.update(alpha_dpo_gap(logps, ref_logps, lengths))
            losses = alpha_dpo_loss(logps, ref_logps, lengths, beta, config.gamma, config.alpha, gap_mean, gap_std)
    rewards = beta * (logps / lengths if config.name == "simpo" else logps - ref_logps)
    return losses, _reward_metrics(rewards, logps)
