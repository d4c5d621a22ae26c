"""The user-state dynamics: each mechanism does what its formula says, and can be switched off."""
import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import MultinomialLogitUser, Responses
from simenv.dynamics import DynamicsConfig
from simenv.social import SocialGraph


def serve(world, users, slates, choice, rating):
    users = np.asarray(users, np.int64)
    r = Responses(np.asarray(choice, np.int32), np.asarray(rating, np.float32),
                  np.ones(len(users), np.float32))
    return world.apply(users, np.asarray(slates, np.int32), r, np.ones(len(users), bool))


def cos_to_item(world, user, item):
    return (world.population.interests[user] @ world.catalog.embeddings[item]).max()


def test_drift_moves_interests_toward_a_liked_item_and_away_from_a_disliked_one(world):
    liked_before, disliked_before = cos_to_item(world, 0, 7), cos_to_item(world, 1, 7)
    for _ in range(5):
        serve(world, [0, 1], [[7, 8, 9], [7, 8, 9]], [0, 0], [5, 1])
    assert cos_to_item(world, 0, 7) > liked_before
    assert cos_to_item(world, 1, 7) < disliked_before


def test_without_drift_consumption_leaves_interests_unchanged(world):
    world.dynamics = dataclasses.replace(world.dynamics, drift=False)
    before = world.population.interests.copy()
    serve(world, [0], [[7, 8, 9]], [0], [5])
    np.testing.assert_array_equal(world.population.interests, before)


def test_satiation_rises_on_consumption_and_recovers_when_the_user_is_not_exposed(world):
    serve(world, [0], [[7, 8, 9]], [0], [4])
    sated = world.population.satiation[0].max()
    assert sated > 0
    for _ in range(5):
        serve(world, [0], [[7, 8, 9]], [-1], [0])  # served, nothing consumed
    assert world.population.satiation[0].max() < sated * 0.7


def test_repeated_slates_bore_the_user_and_boredom_spends_patience(world):
    serve(world, [2], [[3, 4, 5]], [0], [4])
    serve(world, [2], [[4, 5, 6]], [0], [4])
    world.population.budget[2] = 10.0
    serve(world, [2], [[3, 4, 5]], [-1], [0])
    assert world.population.boredom[2] > 0
    assert world.population.budget[2] < 10.0 - 1.0  # more than the plain cost of a step


def test_a_user_leaves_when_patience_runs_out_and_never_when_leaving_is_off(world):
    world.population.budget[3] = 0.5
    assert serve(world, [3], [[1, 2, 3]], [-1], [0])[0]
    world.dynamics = dataclasses.replace(world.dynamics, leave=False)
    world.population.budget[4] = 0.5
    assert not serve(world, [4], [[1, 2, 3]], [-1], [0])[0]


def test_memory_keeps_the_most_recent_items_first(world):
    for item in (10, 11, 12):
        serve(world, [5], [[item, 0, 1]], [0], [4])
    assert world.population.recent_items(np.array([5]))[0, :4].tolist() == [12, 11, 10, -1]


def two_cliques(n):
    """Users 0..n/2-1 form one clique and the rest another: no edge between them."""
    h = n // 2
    src, dst = np.triu_indices(h, 1)
    return SocialGraph.from_edges(n, np.concatenate([src, src + h]), np.concatenate([dst, dst + h]))


def neighbor_alignment(world, users, graph):
    x = world.population.interests.mean(axis=1)
    nbr = graph.to_scipy() @ x
    return np.mean([x[u] @ nbr[u] / np.linalg.norm(x[u]) / np.linalg.norm(nbr[u]) for u in users])


def test_social_influence_pulls_a_users_interests_toward_their_neighbors(world):
    graph = two_cliques(world.num_users)
    world.social = graph
    world.dynamics = dataclasses.replace(world.dynamics, social_interval=1, social_rate=0.2, stubbornness=0.0)
    isolated = world.copy()
    isolated.dynamics = dataclasses.replace(world.dynamics, social=False)
    users = range(world.num_users)
    before = neighbor_alignment(world, users, graph)
    for _ in range(5):
        world.tick()
        isolated.tick()
    assert 1 - neighbor_alignment(world, users, graph) < 0.5 * (1 - before)  # disagreement halves
    assert abs(neighbor_alignment(isolated, users, graph) - before) < 1e-6


def test_stubbornness_keeps_users_near_their_initial_interests(world):
    world.dynamics = dataclasses.replace(world.dynamics, social_interval=1, social_rate=0.3, stubbornness=0.0)
    stubborn = world.copy()
    stubborn.dynamics = dataclasses.replace(world.dynamics, stubbornness=0.3)
    for _ in range(30):
        world.tick()
        stubborn.tick()
    anchor = world.population.anchor

    def drift(w):
        return 1 - np.einsum("ukd,ukd->uk", w.population.interests, anchor).mean()

    assert drift(stubborn) < drift(world)


def test_exposure_spillover_makes_items_neighbors_consumed_more_attractive(world):
    model = MultinomialLogitUser()
    users = np.arange(world.num_users)
    items = np.tile(np.array([[40]], np.int32), (world.num_users, 1))
    before = model.item_values(world, users, items)
    world.population.memory_items[:, 0] = 40  # everyone just watched item 40
    world.population.memory_pos[:] = 1
    world.dynamics = dataclasses.replace(world.dynamics, social_interval=1, social=False)
    world.tick()
    has_friends = world.social.degrees() > 0
    after = model.item_values(world, users, items)
    np.testing.assert_allclose(after[has_friends] - before[has_friends], model.config.spillover_bonus, rtol=1e-5)


def test_the_counter_based_choice_does_not_depend_on_who_else_is_in_the_batch(world):
    model = MultinomialLogitUser()
    slates = np.tile(np.arange(5, dtype=np.int32), (world.num_users, 1))
    everyone = model.respond(world, np.arange(world.num_users), slates)
    some = np.array([3, 17, 42])
    alone = model.respond(world, some, slates[some])
    np.testing.assert_array_equal(everyone.choice[some], alone.choice)
    np.testing.assert_array_equal(everyone.rating[some], alone.rating)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    drift_rate=st.floats(0, 1),
    dislike_rate=st.floats(0, 1),
    social_rate=st.floats(0, 0.5),
    stubbornness=st.floats(0, 0.5),
    satiation_gain=st.floats(0, 1),
)
def test_state_stays_finite_and_normalised_under_any_parameters(small_world, seed, drift_rate, dislike_rate,
                                                               social_rate, stubbornness, satiation_gain):
    world = small_world.copy()
    world.dynamics = DynamicsConfig(drift_rate=drift_rate, dislike_rate=dislike_rate, social_rate=social_rate,
                                    stubbornness=stubbornness, satiation_gain=satiation_gain, social_interval=1)
    rng = np.random.default_rng(seed)
    users = np.arange(world.num_users)
    for _ in range(5):
        slates = np.stack([rng.choice(world.num_items, 4, replace=False) for _ in users])
        choice = rng.integers(-1, 4, len(users))
        rating = np.where(choice >= 0, rng.integers(1, 6, len(users)), 0)
        serve(world, users, slates, choice, rating)
        world.tick()
    p = world.population
    for name, arr in p.arrays().items():
        assert np.all(np.isfinite(arr)), name
    np.testing.assert_allclose(np.linalg.norm(p.interests, axis=-1), 1.0, atol=1e-4)
    np.testing.assert_allclose(p.weights.sum(axis=1), 1.0, atol=1e-5)
    assert p.satiation.min() >= 0 and p.satiation.max() <= 1
    assert p.boredom.min() >= 0 and p.boredom.max() <= 1
