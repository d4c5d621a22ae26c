"""Specifications of the SASRec next-item baseline: it learns a deterministic successor rule well enough
to rank the true next item first among 20 candidates (leave-last-out), is reproducible for a seed,
never lets padding or batching change a score, and rejects bad input by name.

The world: 50 items and a fixed random permutation ``SUCC``; every user starts at a random item and
then always moves to ``SUCC[item]``. Models are tiny (1 block, dim 32) so fitting takes ~1 s.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from policies.sasrec import SASRec, SASRecConfig  # noqa: E402

NUM_ITEMS = 50
NUM_CANDIDATES = 20
SUCC = np.random.default_rng(0).permutation(NUM_ITEMS)
SMALL = SASRecConfig(max_len=20, dim=32, heads=2, layers=1, dropout=0.1, epochs=10, batch_size=64, lr=3e-3)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models: a second thread only adds synchronisation (100x slower when the other core is busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def successor_sequences(num_users: int, seed: int) -> list[np.ndarray]:
    """Users of 4 to 25 items, each item followed by its successor SUCC[item]."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(num_users):
        seq = [int(rng.integers(NUM_ITEMS))]
        for _ in range(int(rng.integers(3, 25))):
            seq.append(int(SUCC[seq[-1]]))
        seqs.append(np.array(seq))
    return seqs


def leave_last_out(seqs: list[np.ndarray], seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Histories (all but the last item) and (U, 20) candidates: the held-out last item in column 0,
    then 19 distinct other items."""
    rng = np.random.default_rng(seed)
    candidates = [np.concatenate([[s[-1]], rng.choice(np.delete(np.arange(NUM_ITEMS), s[-1]), NUM_CANDIDATES - 1,
                                                      replace=False)]) for s in seqs]
    return [s[:-1] for s in seqs], np.array(candidates)


def hit_rate_at_1(model: SASRec, histories: list[np.ndarray], candidates: np.ndarray) -> float:
    return float(np.mean(model.score(histories, candidates).argmax(axis=1) == 0))


@pytest.fixture(scope="module")
def fitted() -> SASRec:
    return SASRec(NUM_ITEMS, SMALL).fit(successor_sequences(200, seed=1))


@pytest.fixture(scope="module")
def held_out() -> tuple[list[np.ndarray], np.ndarray]:
    """Unseen users of the same rule."""
    return leave_last_out(successor_sequences(200, seed=2), seed=3)


def test_fitted_model_ranks_the_true_next_item_first(fitted, held_out):
    assert hit_rate_at_1(fitted, *held_out) > 0.9


def test_unfitted_model_is_near_chance(held_out):
    # chance is 1/20 = 0.05; 200 users give a standard error of ~0.015
    assert hit_rate_at_1(SASRec(NUM_ITEMS, SMALL), *held_out) < 0.15


def test_fit_records_one_falling_mean_loss_per_epoch(fitted):
    assert len(fitted.history) == SMALL.epochs
    assert fitted.history[0] < np.log(NUM_ITEMS) + 1.0  # starts near a uniform guess, not far above it
    assert fitted.history[-1] < 0.5 * fitted.history[0]


def test_same_seed_gives_identical_scores_and_another_seed_does_not(held_out):
    seqs = successor_sequences(60, seed=4)
    config = SASRecConfig(max_len=20, dim=16, heads=2, layers=1, epochs=2, batch_size=16)
    histories, candidates = held_out

    def scores(seed: int) -> np.ndarray:
        return SASRec(NUM_ITEMS, replace(config, seed=seed)).fit(seqs).score(histories, candidates)

    first = scores(0)
    np.testing.assert_array_equal(first, scores(0))
    assert not np.allclose(first, scores(1))


def test_fit_does_not_move_the_callers_torch_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    SASRec(NUM_ITEMS, SASRecConfig(dim=16, layers=1, epochs=1)).fit(successor_sequences(10, seed=5))
    assert torch.equal(torch.rand(3), expected)


def test_batch_scores_equal_one_history_at_a_time(fitted, held_out):
    """Histories of 3 to 24 items share a padded batch; padding must not leak into any score."""
    histories, candidates = held_out
    batched = fitted.score(histories, candidates)
    one_by_one = np.concatenate([fitted.score([h], candidates[i:i + 1]) for i, h in enumerate(histories)])
    assert batched.shape == (len(histories), NUM_CANDIDATES)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-5)


def test_only_the_last_max_len_items_are_read(fitted):
    long = successor_sequences(1, seed=6)[0]
    long = np.concatenate([np.arange(NUM_ITEMS)[:SMALL.max_len], long])  # older items beyond the window
    candidates = np.arange(NUM_CANDIDATES)[None]
    np.testing.assert_allclose(fitted.score([long], candidates),
                               fitted.score([long[-SMALL.max_len:]], candidates), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sequences, message", [
    ([], "no training data"),
    ([np.array([3]), np.array([], dtype=np.int64)], "no training data"),
    ([np.array([1, 2]), np.array([0, NUM_ITEMS])], r"sequence 1 has item ids outside 0\.\.49"),
    ([np.array([-1, 2])], "outside"),
    ([np.array([1.0, 2.0])], "integer item ids"),
    ([np.array([[1, 2]])], "must be 1-D"),
])
def test_fit_rejects_bad_sequences(sequences, message):
    with pytest.raises(ValueError, match=message):
        SASRec(NUM_ITEMS, SMALL).fit(sequences)


@pytest.mark.parametrize("histories, candidates, message", [
    ([np.array([1, 2])] * 2, np.zeros((3, NUM_CANDIDATES), np.int64),
     r"candidates must have shape \(len\(histories\)=2"),
    ([np.array([1, 2])], np.zeros(NUM_CANDIDATES, np.int64), "candidates must have shape"),
    ([np.array([1, 2])], np.full((1, NUM_CANDIDATES), NUM_ITEMS), "candidates has item ids outside"),
    ([np.array([1, 2]), np.array([], dtype=np.int64)], np.zeros((2, 5), np.int64), "history 1 is empty"),
    ([np.array([1, 99])], np.zeros((1, 5), np.int64), "history 0 has item ids outside"),
])
def test_score_rejects_bad_input(histories, candidates, message):
    with pytest.raises(ValueError, match=message):
        SASRec(NUM_ITEMS, SMALL).score(histories, candidates)


def test_config_must_split_dim_over_heads():
    with pytest.raises(ValueError, match="divisible by heads"):
        SASRec(NUM_ITEMS, SASRecConfig(dim=30, heads=4))
