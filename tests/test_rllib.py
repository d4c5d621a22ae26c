"""RLlib's new API stack on RecSim-LLM-v0: the Plackett-Luce slate distribution of ``SlateRLModule``
is an exact distribution over ordered slates of distinct candidates, and PPO trains with it through
the env's registered vector entry point."""
import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ray.rllib")

from policies.rllib_slate import PlackettLuceSlate, build_algo, ppo_config  # noqa: E402


def _brute_force_plackett_luce(scores: np.ndarray, slate: tuple[int, ...]) -> float:
    """P(slate) = prod_j exp(s_{a_j}) / sum_{c not yet picked} exp(s_c), one position at a time."""
    p, left = 1.0, list(range(len(scores)))
    for a in slate:
        w = np.exp(scores[left])
        p *= math.exp(scores[a]) / w.sum()
        left.remove(a)
    return p


def test_sampled_slates_never_repeat_a_candidate():
    torch.manual_seed(0)
    dist = PlackettLuceSlate(torch.randn(64, 10) * 3.0, slate_size=5)  # peaked scores tempt repeats
    slates = dist.sample(sample_shape=(200,))  # (200, 64, 5)
    assert slates.shape == (200, 64, 5)
    s = slates.sort(dim=-1).values
    assert not (s[..., 1:] == s[..., :-1]).any()
    assert slates.min() >= 0 and slates.max() < 10


def test_logp_of_all_ordered_slates_sums_to_one_and_matches_brute_force_plackett_luce():
    torch.manual_seed(1)
    logits = torch.randn(3, 4, dtype=torch.float64)  # 3 users, 4 candidates, slate of 2
    dist = PlackettLuceSlate(logits, slate_size=2)
    slates = list(itertools.permutations(range(4), 2))  # all 12 ordered slates
    value = torch.tensor(slates)[:, None, :].expand(-1, 3, -1)  # (12, 3, 2)
    probs = dist.logp(value).exp()  # (12, 3)
    np.testing.assert_allclose(probs.sum(dim=0).numpy(), 1.0, rtol=1e-12)
    expected = [[_brute_force_plackett_luce(logits[u].numpy(), s) for u in range(3)] for s in slates]
    np.testing.assert_allclose(probs.numpy(), expected, rtol=1e-10)


def test_sampling_frequencies_follow_the_logp():
    torch.manual_seed(2)
    logits = torch.tensor([[1.5, 0.0, -1.0, 0.5]])
    dist = PlackettLuceSlate(logits, slate_size=2)
    draws = dist.sample(sample_shape=(40_000,))[:, 0]  # (40000, 2)
    slates = list(itertools.permutations(range(4), 2))
    freq = np.array([((draws[:, 0] == a) & (draws[:, 1] == b)).float().mean().item() for a, b in slates])
    probs = dist.logp(torch.tensor(slates)[:, None, :]).exp()[:, 0].numpy()
    np.testing.assert_allclose(freq, probs, atol=0.01)


def test_deterministic_slate_is_the_top_k_scores_best_first():
    logits = torch.tensor([[0.1, 2.0, -1.0, 0.7, 1.3], [5.0, 4.0, 3.0, 2.0, 1.0]])
    greedy = PlackettLuceSlate(logits, slate_size=3).to_deterministic().sample()
    assert greedy.tolist() == [[1, 4, 3], [0, 1, 2]]


def test_entropy_of_uniform_scores_is_the_log_number_of_ordered_slates():
    # uniform scores: every ordered slate has probability (C - k)! / C!, whichever prefix is followed
    dist = PlackettLuceSlate(torch.zeros(2, 6, requires_grad=True), slate_size=3)
    entropy = dist.entropy()
    np.testing.assert_allclose(entropy.detach().numpy(), math.log(6 * 5 * 4), rtol=1e-6)
    entropy.sum().backward()  # PPO's entropy bonus needs a finite gradient


def test_ppo_trains_on_the_registered_vector_env_without_emitting_a_repeated_slot(ray_local, tmp_path):
    """Two PPO iterations through ``gym.make_vec("simenv:RecSim-LLM-v0", vectorization_mode="vector_entry_point")``.

    The env raises on any slate that repeats a position, so finishing the iterations also proves the
    module sampled only distinct slots (a MultiCategorical head would fail on the first step).
    """
    env_config = dict(num_users=64, num_items=60, num_candidates=10, slate_size=3, horizon=8,
                      embedding_model="random", candidate_features=True)
    config = ppo_config(env_config, num_env_runners=0, users_per_runner=64, seed=0,
                        steps_per_user=8, minibatch_size=256, num_epochs=2)
    algo = build_algo(config, tmp_path)  # its log folder goes to tmp_path, not ~/ray_results
    try:
        results = [algo.train() for _ in range(2)]
    finally:
        algo.stop()
    last = results[-1]
    assert np.isfinite(last["env_runners"]["episode_return_mean"])
    assert last["env_runners"]["num_env_steps_sampled_lifetime"] >= 2 * 8 * 64
    learner = last["learners"]["default_policy"]
    for key in ("total_loss", "policy_loss", "vf_loss", "entropy"):
        assert np.isfinite(learner[key]), key
