"""Specifications of the preference losses in policies/llm/losses.py.

Expected values are worked out by hand with ``math``; the arithmetic is in the comments.
"""
import math

import pytest
import torch

from policies.llm.losses import (
    LOSS_NAMES,
    GapMoments,
    LossConfig,
    alpha_dpo_gap,
    alpha_dpo_loss,
    cdpo_loss,
    dmpo_loss,
    dpo_loss,
    preference_loss,
    sdpo_loss,
    simpo_loss,
)


def t(rows, requires_grad=False):
    return torch.tensor(rows, dtype=torch.float64, requires_grad=requires_grad)


def softplus(x):
    """−log σ(−x) = log(1 + eˣ), the hand-side of every expected value."""
    return math.log1p(math.exp(x))


def random_batch(b=6, k=3, seed=0):
    """Log-probs of plausible magnitude and token counts; ref close to the policy, as after SFT."""
    g = torch.Generator().manual_seed(seed)
    logps = -1 - 9 * torch.rand(b, 1 + k, generator=g, dtype=torch.float64)
    ref = logps + 0.5 * torch.randn(b, 1 + k, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, 12, (b, 1 + k), generator=g).double()
    return logps, ref, lengths


# One pair: r_w = −1.0 − (−1.5) = 0.5, r_l = −2.0 − (−1.5) = −0.5, Δ = 1.0; with β = 0.5, βΔ = 0.5.
PAIR_LOGPS, PAIR_REF, BETA = [[-1.0, -2.0]], [[-1.5, -1.5]], 0.5
# Two negatives: r = [0.5, −0.5, −1.0].
LIST_LOGPS, LIST_REF = [[-1.0, -2.0, -3.0]], [[-1.5, -1.5, -2.0]]


def test_dpo_matches_hand_value():
    # L = −log σ(0.5) = log(1 + e^−0.5) = 0.474077…
    loss = dpo_loss(t(PAIR_LOGPS), t(PAIR_REF), BETA)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(softplus(-0.5), rel=1e-12)
    assert loss.item() == pytest.approx(0.474077, abs=1e-6)


def test_dpo_with_two_negatives_is_the_mean_over_pairs():
    # pairs: β(r_w − r_l) = 0.5·1.0 = 0.5 and 0.5·1.5 = 0.75 → (log(1+e^−0.5) + log(1+e^−0.75)) / 2
    loss = dpo_loss(t(LIST_LOGPS), t(LIST_REF), BETA)
    assert loss.item() == pytest.approx((softplus(-0.5) + softplus(-0.75)) / 2, rel=1e-12)


def test_cdpo_matches_hand_value():
    # ε = 0.2: L = 0.8·log(1 + e^−0.5) + 0.2·log(1 + e^0.5) = 0.8·0.474077 + 0.2·0.974077 = 0.574077…
    loss = cdpo_loss(t(PAIR_LOGPS), t(PAIR_REF), t([[0.2]]), BETA)
    assert loss.item() == pytest.approx(0.8 * softplus(-0.5) + 0.2 * softplus(0.5), rel=1e-12)
    assert loss.item() == pytest.approx(0.574077, abs=1e-6)


def test_sdpo_with_two_negatives_matches_hand_value():
    # β(r_k − r_w) = [0.5·(−1.0), 0.5·(−1.5)] = [−0.5, −0.75];
    # softplus(log Σ_k e^{…}) = log(1 + e^−0.5 + e^−0.75) = log(2.078898…) = 0.731887…
    loss = sdpo_loss(t(LIST_LOGPS), t(LIST_REF), BETA)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.5) + math.exp(-0.75)), rel=1e-12)


def test_dmpo_with_two_negatives_matches_hand_value():
    # β·r_w − (β/K)·Σ r_k = 0.5·0.5 − 0.25·(−0.5 − 1.0) = 0.25 + 0.375 = 0.625 → log(1 + e^−0.625)
    loss = dmpo_loss(t(LIST_LOGPS), t(LIST_REF), BETA)
    assert loss.item() == pytest.approx(softplus(-0.625), rel=1e-12)


def test_simpo_matches_hand_value():
    # ℓ̄ = [−2/2, −6/3] = [−1, −2]; β = 2, γ = 0.5: β·(ℓ̄_w − ℓ̄_l) − γ = 2·1 − 0.5 = 1.5 → log(1 + e^−1.5)
    loss = simpo_loss(t([[-2.0, -6.0]]), t([[2, 3]]), beta=2.0, gamma=0.5)
    assert loss.item() == pytest.approx(softplus(-1.5), rel=1e-12)


# α-DPO hand example: ℓ̄ = [−2/2, −6/3] = [−1, −2], ℓ̄_ref = [−4/2, −6/3] = [−2, −2];
# gap = (−1 + 2) − (−2 + 2) = 1; μ = 0.5, σ = 0.25, α = 0.2, β = 2, γ = 0.5:
# margin = 0.2·(1 − 0.5)/0.25 + 0.5/2 = 0.4 + 0.25 = 0.65; β·(1 − 0.65) = 0.7.
ALPHA_LOGPS, ALPHA_REF, ALPHA_LENGTHS = [[-2.0, -6.0]], [[-4.0, -6.0]], [[2, 3]]
ALPHA_ARGS = dict(beta=2.0, gamma=0.5, alpha=0.2, gap_mean=0.5, gap_std=0.25)


def test_alpha_dpo_gap_matches_hand_value():
    gap = alpha_dpo_gap(t(ALPHA_LOGPS), t(ALPHA_REF), t(ALPHA_LENGTHS))
    assert gap.shape == (1, 1)
    assert gap.item() == pytest.approx(1.0, rel=1e-12)


def test_alpha_dpo_matches_hand_value():
    loss = alpha_dpo_loss(t(ALPHA_LOGPS), t(ALPHA_REF), t(ALPHA_LENGTHS), **ALPHA_ARGS)
    assert loss.item() == pytest.approx(softplus(-0.7), rel=1e-12)


def test_alpha_dpo_margin_carries_no_gradient():
    # With the margin 0.65 held constant the loss is SimPO's with γ = β·0.65 = 1.3.
    logps = t(ALPHA_LOGPS, requires_grad=True)
    ref = t(ALPHA_REF, requires_grad=True)
    alpha_dpo_loss(logps, ref, t(ALPHA_LENGTHS), **ALPHA_ARGS).sum().backward()
    held = t(ALPHA_LOGPS, requires_grad=True)
    simpo_loss(held, t(ALPHA_LENGTHS), beta=2.0, gamma=2.0 * 0.65).sum().backward()
    torch.testing.assert_close(logps.grad, held.grad)
    # by hand: dL/dlogps = −β·σ(−0.7)·[1/2, −1/3]
    s = 1 / (1 + math.exp(0.7))
    torch.testing.assert_close(logps.grad, t([[-2 * s / 2, 2 * s / 3]]))
    assert ref.grad is None  # the reference enters only through the margin


def test_alpha_dpo_is_simpo_when_the_policy_is_still_the_reference():
    # step one: every gap is 0, so σ = 0; the loss must stay finite and equal SimPO
    logps, _, lengths = random_batch()
    moments = GapMoments()
    mean, std = moments.update(alpha_dpo_gap(logps, logps, lengths))
    assert (mean, std) == (0.0, 0.0)
    loss = alpha_dpo_loss(logps, logps, lengths, 0.5, 0.3, 0.2, mean, std)
    torch.testing.assert_close(loss, simpo_loss(logps, lengths, 0.5, 0.3))


def test_sdpo_with_one_negative_equals_dpo():
    logps, ref, _ = random_batch(k=1)
    torch.testing.assert_close(sdpo_loss(logps, ref, 0.3), dpo_loss(logps, ref, 0.3))


def test_dmpo_with_one_negative_equals_dpo():
    logps, ref, _ = random_batch(k=1)
    torch.testing.assert_close(dmpo_loss(logps, ref, 0.3), dpo_loss(logps, ref, 0.3))


def test_cdpo_with_zero_epsilon_equals_dpo():
    logps, ref, _ = random_batch()
    zero = torch.zeros(logps.shape[0], logps.shape[1] - 1, dtype=torch.float64)
    torch.testing.assert_close(cdpo_loss(logps, ref, zero, 0.3), dpo_loss(logps, ref, 0.3))


def test_alpha_dpo_with_zero_alpha_equals_simpo():
    logps, ref, lengths = random_batch()
    loss = alpha_dpo_loss(logps, ref, lengths, 0.3, 0.7, alpha=0.0, gap_mean=1.3, gap_std=0.4)
    torch.testing.assert_close(loss, simpo_loss(logps, lengths, 0.3, 0.7))


def test_cdpo_with_half_epsilon_is_indifferent_to_the_order():
    # logps = [[Δ, 0]], ref = 0 → r_w − r_l = Δ
    half = t([[0.5]])
    at_zero = t([[0.0, 0.0]], requires_grad=True)
    cdpo_loss(at_zero, torch.zeros_like(at_zero), half, BETA).sum().backward()
    assert at_zero.grad[0, 0].item() == pytest.approx(0.0, abs=1e-15)
    for delta in (0.3, 1.0, 4.0):
        forward = cdpo_loss(t([[delta, 0.0]]), t([[0.0, 0.0]]), half, BETA)
        backward = cdpo_loss(t([[-delta, 0.0]]), t([[0.0, 0.0]]), half, BETA)
        assert forward.item() == pytest.approx(backward.item(), rel=1e-12)


def test_sdpo_pushes_each_negative_in_proportion_to_its_softmax_weight():
    # r = logps when ref = 0; negatives r_k = [−1, −2, −4], β = 2 → softmax(2·r_k) = e^{2r_k} / Σ_j e^{2r_j}
    logps = t([[-1.5, -1.0, -2.0, -4.0]], requires_grad=True)
    sdpo_loss(logps, torch.zeros_like(logps), 2.0).sum().backward()
    weights = [math.exp(2 * r) for r in (-1.0, -2.0, -4.0)]
    expected = [w / sum(weights) for w in weights]
    share = logps.grad[0, 1:] / logps.grad[0, 1:].sum()
    torch.testing.assert_close(share, t(expected))
    # and the chosen response is pulled up by exactly what the negatives are pushed down
    assert logps.grad[0, 0].item() == pytest.approx(-logps.grad[0, 1:].sum().item(), rel=1e-12)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_raises_the_chosen_and_lowers_the_rejected(name):
    # cDPO's gradient turns once σ(βΔ) > 1 − ε (it has a finite optimum); here ε = 0.2, β = 0.1 and
    # |Δ| is a few units (ref = policy + 0.5·noise), so σ(βΔ) stays well below 0.8
    logps, ref, lengths = random_batch(b=8, k=3, seed=1)
    logps.requires_grad_(True)
    epsilon = torch.full((8, 3), 0.2, dtype=torch.float64)
    config = LossConfig(name=name, beta=0.1)
    moments = GapMoments(config.ema_decay)
    losses, _ = preference_loss(config, logps, ref, lengths, epsilon, moments)
    assert losses.shape == (8,)
    losses.sum().backward()
    assert (logps.grad[:, 0] < 0).all()
    assert (logps.grad[:, 1:] > 0).all()


def test_gap_moments_follow_the_ema_by_hand():
    moments = GapMoments(decay=0.9)
    # batch 1 [1, 3]: mean 2, Bessel std √((1 + 1)/1) = √2; the first batch sets the moments
    mean, std = moments.update(t([[1.0], [3.0]]))
    assert (mean, std) == pytest.approx((2.0, math.sqrt(2)), rel=1e-12)
    # batch 2 [4, 8]: mean 6, std √((4 + 4)/1) = 2√2 → μ = 0.9·2 + 0.1·6 = 2.4, σ = 0.9·√2 + 0.1·2√2 = 1.1·√2
    mean, std = moments.update(t([[4.0], [8.0]]))
    assert (mean, std) == pytest.approx((2.4, 1.1 * math.sqrt(2)), rel=1e-12)
    assert (moments.mean, moments.std) == (mean, std)


def test_gap_moments_resume_from_their_state_dict():
    first, second = t([[1.0, 3.0]]), t([[4.0, 8.0]])
    run = GapMoments()
    run.update(first)
    resumed = GapMoments()
    resumed.load_state_dict(run.state_dict())
    expected = run.update(second)
    assert resumed.update(second) == expected
    assert GapMoments().update(second) != expected, "without the state, the EMA restarts from batch 2"


def test_gap_moments_refuse_a_single_gap():
    with pytest.raises(ValueError, match="at least 2"):
        GapMoments().update(t([[1.0]]))


def test_preference_loss_reports_trl_metrics_by_hand():
    # β = 0.5; row 1: r = [0.5, −0.5, −1.0] → β·r = [0.25, −0.25, −0.5], margins [0.5, 0.75]
    #          row 2: r = [0, 1, −1]        → β·r = [0, 0.5, −0.5],       margins [−0.5, 0.5]
    logps = t([[-1.0, -2.0, -3.0], [-2.0, -1.0, -3.0]])
    ref = t([[-1.5, -1.5, -2.0], [-2.0, -2.0, -2.0]])
    losses, metrics = preference_loss(LossConfig(name="dpo", beta=0.5), logps, ref, None, None)
    assert losses[0].item() == pytest.approx((softplus(-0.5) + softplus(-0.75)) / 2, rel=1e-12)
    assert losses[1].item() == pytest.approx((softplus(0.5) + softplus(-0.5)) / 2, rel=1e-12)
    assert metrics == pytest.approx({
        "rewards/chosen": (0.25 + 0.0) / 2,
        "rewards/rejected": (-0.25 - 0.5 + 0.5 - 0.5) / 4,  # −0.1875
        "rewards/margins": (0.5 + 0.75 - 0.5 + 0.5) / 4,  # 0.3125
        "rewards/accuracies": 3 / 4,
        "logps/chosen": (-1.0 - 2.0) / 2,
        "logps/rejected": (-2.0 - 3.0 - 1.0 - 3.0) / 4,
    })


def test_preference_loss_rewards_of_simpo_are_scaled_average_logps():
    # ℓ̄ = [−1, −2], β = 2 → rewards [−2, −4]; no reference needed
    losses, metrics = preference_loss(LossConfig(name="simpo", beta=2.0, gamma=0.5),
                                      t([[-2.0, -6.0]]), None, t([[2, 3]]), None)
    assert losses.item() == pytest.approx(softplus(-1.5), rel=1e-12)
    assert metrics["rewards/chosen"] == pytest.approx(-2.0)
    assert metrics["rewards/rejected"] == pytest.approx(-4.0)
    assert metrics["rewards/margins"] == pytest.approx(2.0)


def test_preference_loss_alpha_dpo_updates_the_moments():
    logps, ref, lengths = random_batch()
    moments = GapMoments()
    preference_loss(LossConfig(name="alpha_dpo"), logps, ref, lengths, None, moments)
    gap = alpha_dpo_gap(logps, ref, lengths)
    assert (moments.mean, moments.std) == pytest.approx((gap.mean().item(), gap.std().item()))


def test_only_simpo_is_reference_free():
    assert [name for name in LOSS_NAMES if not LossConfig(name=name).needs_reference] == ["simpo"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="ipo"), r"loss.name='ipo'.*dpo, cdpo, sdpo, dmpo, simpo, alpha_dpo"),
    (dict(beta=0.0), r"loss.beta=0.0"),
    (dict(beta=-1.0), r"loss.beta=-1.0"),
    (dict(gamma=-0.1), r"loss.gamma=-0.1"),
    (dict(alpha=-0.1), r"loss.alpha=-0.1"),
    (dict(ema_decay=1.0), r"loss.ema_decay=1.0"),
    (dict(ema_decay=0.0), r"loss.ema_decay=0.0"),
])
def test_loss_config_rejects_bad_values_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LossConfig(**kwargs)


def _good_inputs():
    logps, ref, lengths = random_batch(b=4, k=2)
    return dict(logps=logps, ref_logps=ref, lengths=lengths, epsilon=torch.full((4, 2), 0.1, dtype=torch.float64))


@pytest.mark.parametrize("name, change, match", [
    ("dpo", dict(logps=torch.zeros(4)), r"logps has shape \(4,\)"),
    ("dpo", dict(logps=torch.zeros(4, 1)), r"logps has shape \(4, 1\).*K >= 1"),
    ("dpo", dict(ref_logps=torch.zeros(4, 2)), r"ref_logps has shape \(4, 2\).*\(4, 3\)"),
    ("simpo", dict(lengths=torch.ones(3, 3)), r"lengths has shape \(3, 3\).*\(4, 3\)"),
    ("cdpo", dict(epsilon=torch.zeros(4, 3)), r"epsilon has shape \(4, 3\).*\(4, 2\)"),
    ("dpo", dict(ref_logps=None), r"'dpo' needs ref_logps"),
    ("alpha_dpo", dict(ref_logps=None), r"'alpha_dpo' needs ref_logps"),
    ("simpo", dict(lengths=None), r"'simpo' needs lengths"),
    ("simpo", dict(lengths=torch.zeros(4, 3)), r"lengths must be > 0"),
    ("cdpo", dict(epsilon=None), r"'cdpo' needs epsilon"),
    ("cdpo", dict(epsilon=torch.full((4, 2), 0.7)), r"epsilon must lie in \[0, 0.5\]"),
    ("alpha_dpo", dict(moments=None), r"'alpha_dpo' needs moments"),
    ("alpha_dpo", dict(moments=GapMoments(0.5)), r"moments.decay=0.5 differs from config.ema_decay=0.9"),
])
def test_preference_loss_rejects_bad_inputs_naming_the_argument(name, change, match):
    inputs = _good_inputs() | dict(moments=GapMoments()) | change
    with pytest.raises(ValueError, match=match):
        preference_loss(LossConfig(name=name), **inputs)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_preference_loss_accepts_the_good_inputs(name):
    # the counterpart of the rejections above: the same inputs, unchanged, go through
    losses, metrics = preference_loss(LossConfig(name=name), **_good_inputs(), moments=GapMoments())
    assert losses.shape == (4,) and torch.isfinite(losses).all()
    assert set(metrics) == {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                            "logps/chosen", "logps/rejected"}
