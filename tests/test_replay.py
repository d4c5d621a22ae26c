"""Logged histories replayed as simulator states at their decision points."""
from pathlib import Path

import numpy as np
import pytest

from simenv.datasets import load_movielens
from simenv.datasets.replay import (DecisionPoints, Histories, decision_points, leave_last_out, prefix_world,
                                    sample_candidates)

FIXTURE = Path(__file__).parent / "fixtures" / "ml-tiny"


@pytest.fixture(scope="module")
def data():
    return load_movielens(FIXTURE, num_interests=3, embedding_model="random")


def test_leave_last_out_holds_out_each_users_last_event(data):
    train, test = leave_last_out(data.interactions, data.num_users, min_history=5)
    h = Histories(data.interactions, data.num_users)
    assert len(train) + len(test) == len(data.interactions)
    for u, pos, item in zip(test.user, test.position, test.item):
        seq = h.sequence(u)
        assert pos == len(seq) - 1 and item == seq[-1]
        np.testing.assert_array_equal(Histories(train, data.num_users).sequence(u), seq[:-1])
    assert set(test.user) == set(np.flatnonzero(h.length > 5))


def test_prefix_world_holds_each_users_state_just_before_their_choice(data):
    train, _ = leave_last_out(data.interactions, data.num_users)
    points = decision_points(train, data.num_users, per_user=3, min_history=2, seed=1)
    world = prefix_world(data, train, points, memory_size=4)
    h = Histories(train, data.num_users)
    recent = world.population.recent_items(np.arange(len(points)))
    for b, (u, pos) in enumerate(zip(points.user, points.position)):
        before = h.sequence(u)[:pos]
        assert points.item[b] == h.sequence(u)[pos]
        kept = before[-4:][::-1]  # newest first
        np.testing.assert_array_equal(recent[b, : len(kept)], kept)
        assert world.population.persona.age[b] == data.persona.age[u]
        assert world.population.steps[b] == pos


def test_a_full_history_prefix_gives_the_loaders_interests(data):
    everyone = np.arange(data.num_users)
    h = Histories(data.interactions, data.num_users)
    full = DecisionPoints(everyone, h.length.copy(), np.zeros(data.num_users, np.int32),
                          np.zeros(data.num_users, np.float32))
    world = prefix_world(data, data.interactions, full)
    np.testing.assert_allclose(world.population.weights, data.weights, atol=1e-6)
    # the favourite interest is estimated from the data alone (no fill-in noise)
    np.testing.assert_allclose(world.population.interests[:, 0], data.interests[:, 0], atol=1e-5)


def test_sampled_candidates_hold_the_true_item_once_among_unseen_items(data):
    _, test = leave_last_out(data.interactions, data.num_users)
    cands, col = sample_candidates(data.interactions, test, data.catalog.num_items, 6, seed=3)
    ia = data.interactions
    seen = set(zip(ia.user.tolist(), ia.item.tolist()))
    assert np.all(cands[np.arange(len(test)), col] == test.item)
    for b, u in enumerate(test.user):
        others = np.delete(cands[b], col[b])
        assert len(set(cands[b].tolist())) == 6
        assert not any((int(u), int(i)) in seen for i in others)
    assert len(set(col.tolist())) > 1  # the true item is not always in the same column


def test_too_many_candidates_for_a_heavy_user_is_a_clear_error(data):
    _, test = leave_last_out(data.interactions, data.num_users)
    with pytest.raises(ValueError, match="lower num_candidates"):
        sample_candidates(data.interactions, test, data.catalog.num_items, data.catalog.num_items)
