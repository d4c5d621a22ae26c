"""Steering through neighbors: the greedy planner, the experiment on a planted graph, and bad input."""
import json

import gymnasium as gym
import networkx as nx
import numpy as np
import pytest

import simenv  # noqa: F401
from policies.steering import greedy_exposure
from simenv.audit.steering import SteeringConfig, SteeringExperiment, select_targets
from simenv.config import WorldConfig
from simenv.world import build_world

ITEM = 0  # made the least popular item of the planted world, so a popularity recommender never shows it
TARGETS = list(range(10))
FANS = list(range(10, 20))  # one per target, tastes equal to the target item
CRITICS = list(range(20, 70))  # five per target, tastes far from it
USERS = 200


def test_greedy_picks_the_best_marginal_gain_and_stops_when_damage_outweighs_it():
    # neighbors 0 and 1 feed target 0, neighbor 2 feeds target 1 (worked by hand in the comments)
    feeds = np.array([[1, 0], [1, 0], [0, 1]], bool)
    p0, p1 = np.array([0.1, 0.1]), np.array([0.3, 0.5])
    q, cost = np.full(3, 0.5), np.array([0.0, 0.0, 0.05])
    # λ = 1: scores .5*.2 = .1, .1, .5*.4 - .05 = .15 -> neighbor 2; then 0 (.1, first of a tie); then
    # neighbor 1, whose gain has halved to .05 > 0. Target 0 still lacks social proof with prob .5*.5.
    plan = greedy_exposure(feeds, p0, p1, q, cost, 1.0, np.array([7, 8, 9]))
    assert plan.neighbors.tolist() == [9, 7, 8]
    assert plan.gains == pytest.approx([0.2, 0.1, 0.05])
    assert plan.expected_acceptance == pytest.approx([0.1 + 0.2 * 0.75, 0.1 + 0.4 * 0.5])
    # λ = 5: neighbor 2 scores .2 - .25 < 0 and is never picked
    assert greedy_exposure(feeds, p0, p1, q, cost, 5.0, np.array([7, 8, 9])).neighbors.tolist() == [7, 8]


def test_greedy_rejects_mismatched_inputs_and_negative_prices():
    with pytest.raises(ValueError, match="feeds is"):
        greedy_exposure(np.ones((2, 1), bool), [0.1], [0.2], [0.5], [0.0, 0.0], 1.0, [1, 2])
    with pytest.raises(ValueError, match="lam"):
        greedy_exposure(np.ones((1, 1), bool), [0.1], [0.2], [0.5], [0.0], -1.0, [1])


@pytest.fixture(scope="module")
def planted_world():
    """Each target has one fan of the item and five critics as friends; everyone else is a ring.

    The base recommender is most-popular and the item is the catalog's least popular, so nobody sees it
    unless steering puts it there: fans would take it gladly, critics would lose a better slot."""
    g = nx.Graph()
    g.add_nodes_from(range(USERS))
    for t in TARGETS:
        g.add_edge(t, FANS[t])
        for j in range(5):
            g.add_edge(t, CRITICS[5 * t + j])
    rest = list(range(70, USERS))
    g.add_edges_from(zip(rest, rest[1:] + rest[:1]))
    world = build_world(WorldConfig(num_users=USERS, num_items=300, social_graph=g, world_seed=1))
    p, e = world.population, world.catalog.embeddings
    world.catalog.popularity[:] = np.where(np.arange(300) == ITEM, 0.0, world.catalog.popularity)
    world.catalog.popularity[:] /= world.catalog.popularity.sum()
    p.interests[FANS] = e[ITEM]
    p.anchor[FANS] = e[ITEM]
    far = np.argsort(e @ e[ITEM])[:4]  # the items least like the target item
    p.interests[CRITICS] = e[far]
    p.anchor[CRITICS] = e[far]
    return world


def config(**kw):
    return SteeringConfig(ITEM, tuple(TARGETS), base_policy="popular", **kw)


def make_env(world):
    return gym.make_vec("RecSim-LLM-v0", num_envs=USERS, vectorization_mode="vector_entry_point",
                        world=world.copy(), audit=False)


def test_on_a_planted_graph_greedy_steering_beats_random_neighbors_at_no_more_damage(planted_world):
    exp = SteeringExperiment(make_env(planted_world), config(steps=20, lambdas=(0.3,)))
    result = exp.run()
    point = result["sweep"][0]
    greedy, random = point["greedy"], point["random"]
    assert greedy["exposed_neighbors"] == random["exposed_neighbors"] > 0
    assert greedy["ioip"] > random["ioip"] + 0.05
    assert greedy["damage"] <= random["damage"]
    assert greedy["ioip"] > result["direct"]["ioip"]  # the neighbors add to direct exposure
    assert result["reference"]["ioip"] == 0.0


def test_the_greedy_plan_on_the_planted_graph_picks_the_fans(planted_world):
    from policies.steering import greedy_exposure as plan_of

    exp = SteeringExperiment(make_env(planted_world), config(lambdas=(0.3,)))
    plan = plan_of(**exp.plan_inputs(), lam=0.3)
    assert sorted(plan.neighbors.tolist()) == FANS


def test_fewer_neighbors_are_exposed_as_damage_gets_pricier(planted_world):
    exp = SteeringExperiment(make_env(planted_world), config())
    inputs = exp.plan_inputs()
    sizes = [len(greedy_exposure(**inputs, lam=lam).neighbors) for lam in (0.0, 0.1, 1.0, 10.0, 100.0)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]


def test_the_same_seed_gives_the_same_steering_result(planted_world):
    cfg = config(steps=8, lambdas=(1.0,))
    runs = [json.dumps(SteeringExperiment(make_env(planted_world), cfg).run()) for _ in range(2)]
    assert runs[0] == runs[1]  # compared as JSON: NaN (never accepted) equals itself there


def test_targets_are_users_who_dislike_the_item_but_have_fans_among_their_friends(planted_world):
    env = make_env(planted_world)
    env.reset(seed=0)
    sim = env.unwrapped.sim
    chosen = select_targets(sim.world, sim.user_model, ITEM, 5)
    assert set(chosen.tolist()) <= set(TARGETS) | set(CRITICS) | set(range(70, USERS))
    assert not set(chosen.tolist()) & set(FANS)


def test_pinning_puts_the_item_first_among_the_candidates_of_pinned_users_only(planted_world):
    env = make_env(planted_world)
    env.reset(seed=0)
    sim = env.unwrapped.sim
    before = sim.candidates.copy()
    sim.pin(ITEM, np.array([3, 4]))
    assert sim.candidates[3, 0] == ITEM and sim.candidates[4, 0] == ITEM
    assert (sim.candidates[5:] == before[5:]).all()
    assert len(set(sim.candidates[3].tolist())) == sim.candidates.shape[1]  # still distinct
    with pytest.raises(ValueError, match="outside the catalog"):
        sim.pin(10_000, np.array([3]))


def test_bad_steering_input_gets_a_clear_error(planted_world):
    env = make_env(planted_world)
    with pytest.raises(ValueError, match="outside the catalog"):
        SteeringExperiment(env, SteeringConfig(10_000, (1,)))
    with pytest.raises(ValueError, match="outside the population"):
        SteeringExperiment(env, SteeringConfig(ITEM, (USERS + 5,)))
    with pytest.raises(ValueError, match="no neighbors outside"):
        SteeringExperiment(env, SteeringConfig(ITEM, tuple(range(USERS))))
    with pytest.raises(ValueError, match="no target users"):
        SteeringConfig(ITEM, ())
    small = gym.make_vec("RecSim-LLM-v0", num_envs=10, vectorization_mode="vector_entry_point",
                         world=planted_world.copy(), audit=False)
    with pytest.raises(ValueError, match="num_envs=num_users"):
        SteeringExperiment(small, SteeringConfig(ITEM, (1,)))
    with pytest.raises(ValueError, match="no user qualifies"):
        env.reset(seed=0)
        sim = env.unwrapped.sim
        select_targets(sim.world, sim.user_model, ITEM, 3, max_acceptance=0.0)
