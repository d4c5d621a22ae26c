"""Specifications of off-policy evaluation: the estimators on hand-worked logs, the exact Plackett-Luce
propensities of the stochastic slate policy, and ``ope_check`` on a small world, where the estimators
must recover the target's CTR in the logged states that the simulator computes exactly.

The world check uses 8 candidates and slates of 3 (336 ordered slates), so whole-slate importance
weights stay usable (effective sample size ~1,500 of ~6,000 user-steps); with the default 20 and 5
(1.86M slates) they do not, which experiments/ope_check.py shows.
"""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

import simenv  # noqa: F401  (registers RecSim-LLM-v0)
from policies import OraclePolicy, PlackettLucePolicy, PopularityPolicy, RandomPolicy
from policies.base import BasePolicy
from simenv.audit.ope import Estimate, PositionBasedClickModel, dm, dr, ips, ope_check, snips

# a tiny log of 4 user-steps (the arithmetic of every expected value below starts here):
#   rewards r   = [1,    0,    1,    0   ]
#   pi_b(a)     = [1/2,  1/4,  1/4,  1/2 ]
#   pi_e(a)     = [1/4,  1/2,  1/2,  1/4 ]  ->  w = pi_e / pi_b = [1/2, 2, 2, 1/2],  sum w = 5, sum w^2 = 8.5
R = np.array([1.0, 0.0, 1.0, 0.0])
LOG_PB = np.log([0.5, 0.25, 0.25, 0.5])
LOG_PE = np.log([0.25, 0.5, 0.5, 0.25])
Q_LOGGED = np.array([0.5, 0.25, 0.5, 0.25])
Q_TARGET = np.array([0.4, 0.4, 0.6, 0.6])
ESS = 5.0**2 / 8.5  # (sum w)^2 / sum w^2 = 25 / 8.5


# estimators -----------------------------------------------------------------------------------------
def test_ips_is_the_mean_of_weighted_rewards():
    # w r = [0.5, 0, 2, 0]: mean 2.5 / 4 = 0.625; deviations [-0.125, -0.625, 1.375, -0.625],
    # squares sum 2.6875, sample variance 2.6875 / 3 = 0.895833, stderr sqrt(0.895833 / 4) = 0.473242
    est = ips(R, LOG_PE, LOG_PB)
    assert isinstance(est, Estimate)
    assert est.value == pytest.approx(0.625)
    assert est.stderr == pytest.approx(0.473242, abs=1e-6)
    assert est.ess == pytest.approx(ESS)


def test_ips_clips_weights_at_lambda():
    # clip 1: w = [0.5, 1, 1, 0.5]; w r = [0.5, 0, 1, 0]: 1.5 / 4 = 0.375; ess = 3^2 / 2.5 = 3.6
    est = ips(R, LOG_PE, LOG_PB, clip=1.0)
    assert est.value == pytest.approx(0.375)
    assert est.ess == pytest.approx(3.6)


def test_snips_normalises_by_the_sum_of_weights():
    # sum w r / sum w = 2.5 / 5 = 0.5; delta-method stderr: w^2 (r - 0.5)^2 = [0.0625, 1, 1, 0.0625],
    # sum 2.125, sqrt 1.457738 / 5 = 0.291548
    est = snips(R, LOG_PE, LOG_PB)
    assert est.value == pytest.approx(0.5)
    assert est.stderr == pytest.approx(0.291548, abs=1e-6)
    assert est.ess == pytest.approx(ESS)


def test_dr_adds_weighted_residuals_to_the_model_prediction():
    # q_e + w (r - q_a): 0.4 + 0.5 (1 - 0.5) = 0.65;  0.4 + 2 (0 - 0.25) = -0.1;
    #                    0.6 + 2 (1 - 0.5)   = 1.6;   0.6 + 0.5 (0 - 0.25) = 0.475;  mean 2.625 / 4 = 0.65625
    assert dr(R, LOG_PE, LOG_PB, Q_LOGGED, Q_TARGET).value == pytest.approx(0.65625)
    # DM is the model alone: mean([0.4, 0.4, 0.6, 0.6]) = 0.5
    assert dm(Q_TARGET).value == pytest.approx(0.5)


def test_dr_reduces_to_ips_with_a_zero_model_and_to_dm_with_a_perfect_one():
    zero = np.zeros(4)
    assert dr(R, LOG_PE, LOG_PB, zero, zero).value == pytest.approx(ips(R, LOG_PE, LOG_PB).value)
    assert dr(R, LOG_PE, LOG_PB, R, Q_TARGET).value == pytest.approx(dm(Q_TARGET).value)


def test_on_policy_logs_make_every_estimator_the_observed_ctr():
    # pi_e == pi_b: every weight is 1
    for est in (ips(R, LOG_PB, LOG_PB), snips(R, LOG_PB, LOG_PB)):
        assert est.value == pytest.approx(0.5)
        assert est.ess == pytest.approx(4.0)


@pytest.mark.parametrize("call, message", [
    (lambda: ips(np.array([]), np.array([]), np.array([])), "empty"),
    (lambda: snips(R, LOG_PE[:3], LOG_PB), "rows"),
    (lambda: ips(R[:, None], LOG_PE, LOG_PB), "shape"),
    (lambda: dr(R, LOG_PE, LOG_PB, Q_LOGGED[:2], Q_TARGET), "rows"),
    (lambda: snips(R, np.full(4, -np.inf), LOG_PB), "all importance weights are 0"),
    (lambda: ips(R, LOG_PE, np.array([0.0, -np.inf, 0.0, 0.0])), "positive probability"),
    (lambda: ips(R, LOG_PE, LOG_PB, clip=0.0), "clip"),
    (lambda: dm(np.array([])), "empty"),
])
def test_bad_logs_are_rejected_with_the_reason(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# reward model ---------------------------------------------------------------------------------------
def test_position_based_model_learns_examination_and_attractiveness_from_clicks():
    # item 0 is clicked whenever shown first, never second; item 1 never: position 0 clicks 1/2 of
    # slates, position 1 none, so theta = [1, 0]; gamma_0 = (2 + 10 g) / (2 + 10) > g > gamma_1
    slates = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
    choice = np.array([0, -1, 0, -1])
    model = PositionBasedClickModel.fit(slates, choice, num_items=3)
    np.testing.assert_allclose(model.examination, [1.0, 0.0])
    g = 2 / 4  # clicks per examination-weighted impression
    assert model.attractiveness[0] == pytest.approx((2 + 10 * g) / (2 + 10))
    assert model.attractiveness[1] == pytest.approx((0 + 10 * g) / (2 + 10))
    assert model.attractiveness[2] == pytest.approx(g)  # never shown: the prior
    # 1 - (1 - theta_0 gamma_0)(1 - theta_1 gamma_1) = gamma_0
    assert model.predict(np.array([0, 1])) == pytest.approx(model.attractiveness[0])


# Plackett-Luce --------------------------------------------------------------------------------------
class _FixedScores(BasePolicy):
    def __init__(self, scores: np.ndarray) -> None:
        super().__init__()
        self._scores = np.asarray(scores, np.float64)

    def scores(self, obs):
        return np.broadcast_to(self._scores, obs["candidates"].shape)


def _pl(scores, temperature: float = 1.0, slate_size: int = 2, seed: int = 0) -> PlackettLucePolicy:
    policy = PlackettLucePolicy(_FixedScores(scores), temperature, seed=seed)
    policy.setup(SimpleNamespace(config=SimpleNamespace(slate_size=slate_size, num_candidates=len(scores))))
    return policy


def _obs(n: int, c: int) -> dict[str, np.ndarray]:
    return {"candidates": np.tile(np.arange(c, dtype=np.int32), (n, 1))}


ALL_PAIRS = np.array(list(itertools.permutations(range(4), 2)))  # the 12 ordered slates of 2 from 4


def test_plackett_luce_probabilities_of_all_slates_sum_to_one():
    policy = _pl(np.log([1.0, 2.0, 3.0, 4.0]), temperature=0.7)
    logp = policy.log_propensity(_obs(len(ALL_PAIRS), 4), ALL_PAIRS)
    assert logp.shape == (12,) and logp.dtype == np.float64
    assert np.exp(logp).sum() == pytest.approx(1.0, abs=1e-12)


def test_plackett_luce_propensity_matches_the_hand_computed_product():
    # weights 1, 2, 3, 4 at T = 1: P(3 then 2) = 4 / 10 * 3 / (10 - 4) = 0.2
    policy = _pl(np.log([1.0, 2.0, 3.0, 4.0]))
    assert np.exp(policy.log_propensity(_obs(1, 4), np.array([[3, 2]])))[0] == pytest.approx(0.2)


def test_plackett_luce_sampler_draws_slates_with_their_propensities():
    n = 40_000
    policy = _pl(np.log([1.0, 2.0, 3.0, 4.0]), temperature=0.7, seed=3)
    slates = policy.act(_obs(n, 4))
    codes = slates[:, 0] * 4 + slates[:, 1]
    freq = np.bincount(codes, minlength=16)[ALL_PAIRS[:, 0] * 4 + ALL_PAIRS[:, 1]] / n
    p = np.exp(policy.log_propensity(_obs(len(ALL_PAIRS), 4), ALL_PAIRS))
    assert freq.sum() == pytest.approx(1.0)  # every draw is a valid ordered pair
    np.testing.assert_array_less(np.abs(freq - p), 4 * np.sqrt(p * (1 - p) / n))  # 4 binomial sds


def test_plackett_luce_over_random_scores_is_uniform():
    policy = PlackettLucePolicy(RandomPolicy(), temperature=1.0)
    policy.setup(SimpleNamespace(config=SimpleNamespace(slate_size=2, num_candidates=4)))
    np.testing.assert_allclose(np.exp(policy.log_propensity(_obs(12, 4), ALL_PAIRS)), 1 / 12)


def test_plackett_luce_at_low_temperature_shows_the_base_policys_greedy_slate():
    scores = np.array([0.3, 2.0, -1.0, 1.0, 0.5])
    policy = _pl(scores, temperature=1e-3, slate_size=3)
    np.testing.assert_array_equal(policy.act(_obs(50, 5)), np.tile([1, 3, 4], (50, 1)))


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_plackett_luce_rejects_a_non_positive_or_non_finite_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        PlackettLucePolicy(RandomPolicy(), temperature)


def test_plackett_luce_log_propensity_rejects_malformed_slates():
    policy = _pl(np.zeros(4))
    with pytest.raises(ValueError, match="distinct"):
        policy.log_propensity(_obs(1, 4), np.array([[1, 1]]))
    with pytest.raises(ValueError, match="expected integer positions"):
        policy.log_propensity(_obs(2, 4), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="0..3"):
        policy.log_propensity(_obs(1, 4), np.array([[0, 4]]))


# ope_check on a small world -------------------------------------------------------------------------
SEED = 0
STEPS = 30


@pytest.fixture(scope="module")
def env():
    env = gym.make_vec("RecSim-LLM-v0", num_envs=200, vectorization_mode="vector_entry_point", num_users=200,
                       num_items=200, num_candidates=8, slate_size=3)
    yield env
    env.close()


def _policies() -> tuple[PlackettLucePolicy, PlackettLucePolicy]:
    behavior = PlackettLucePolicy(PopularityPolicy(), temperature=100.0, seed=1)  # nearly uniform logging
    target = PlackettLucePolicy(OraclePolicy(), temperature=2.0, seed=2)
    return behavior, target


@pytest.fixture(scope="module")
def check(env):
    return ope_check(env, *_policies(), steps=STEPS, seed=SEED)


@pytest.mark.parametrize("name", ["ips", "snips", "dr"])
def test_estimators_recover_the_target_ctr_in_the_logged_states(check, name):
    # tolerance: 3 standard errors (the nominal 95% CIs under-cover with heavy-tailed weights: ~85-90%
    # over 20 seeds in this setting), and the truth inside the bootstrap CI widened by one stderr
    est, truth = check["estimators"][name], check["truth_logged_states"]
    assert abs(est["value"] - truth) < 3 * est["stderr"]
    assert est["ci_low"] - est["stderr"] < truth < est["ci_high"] + est["stderr"]
    assert est["ci_low"] < est["value"] < est["ci_high"]


def test_the_oracle_based_target_beats_the_popularity_based_behaviour(check):
    assert check["truth_logged_states"] > check["behavior_ctr"] + 0.05
    assert check["truth_on_policy"] > check["behavior_ctr"] + 0.05


def test_on_policy_click_rate_agrees_with_the_exact_click_probabilities(check):
    # realised clicks are Bernoulli draws of the exact probabilities: 4 binomial sds
    p, n = check["truth_on_policy_expected"], check["on_policy_user_steps"]
    assert abs(check["truth_on_policy"] - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert check["state_shift_gap"] == pytest.approx(check["truth_logged_states"] - p)


def test_ope_check_is_reproducible_for_a_fixed_seed(env, check):
    assert ope_check(env, *_policies(), steps=STEPS, seed=SEED) == check


def test_ope_check_needs_propensities_from_both_policies(env):
    with pytest.raises(TypeError, match="PlackettLucePolicy"):
        ope_check(env, PopularityPolicy(), PlackettLucePolicy(OraclePolicy(), 1.0), steps=2, seed=0)
