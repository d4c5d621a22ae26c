"""Specifications of the social graph: its invariants, the builders, and the user-facing graph inputs."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simenv.graph_builders import (
    SOCIAL_GRAPH_KINDS,
    build_social_graph,
    from_edgelist,
    homophily_sbm,
    knn_taste_graph,
    scale_free,
    small_world,
)
from simenv.persona import Persona
from simenv.social import SocialGraph

NUM_USERS = 5_000
MEAN_DEGREE = 10.0
RANDOM_KINDS = ("sbm", "small_world", "scale_free")
BUILT_KINDS = RANDOM_KINDS + ("knn",)


def random_persona(num_users: int, seed: int = 0) -> Persona:
    rng = np.random.default_rng(seed)
    return Persona(
        age=rng.integers(18, 70, num_users).astype(np.int16),
        gender=rng.integers(0, 2, num_users).astype(np.int8),
        occupation=rng.integers(0, 21, num_users).astype(np.int16),
        gender_names=("female", "male"),
        occupation_names=tuple(f"occupation {i}" for i in range(21)),
    )


def build(kind: str, seed: int = 1, num_users: int = NUM_USERS, **kwargs) -> SocialGraph:
    interests = np.random.default_rng(7).normal(size=(num_users, 3, 16)).astype(np.float32)
    return build_social_graph(kind, num_users=num_users, persona=random_persona(num_users), interests=interests,
                              mean_degree=kwargs.pop("mean_degree", MEAN_DEGREE), rng=np.random.default_rng(seed),
                              **kwargs)


def edge_set(graph: SocialGraph) -> set[tuple[int, int]]:
    src = np.repeat(np.arange(graph.num_users), graph.degrees())
    return set(zip(src.tolist(), graph.indices.tolist()))


def assert_is_friendship_graph(graph: SocialGraph) -> None:
    """The invariants every builder promises: row-stochastic W, symmetric support, no self-loops."""
    w = graph.to_scipy()
    rowsum = np.asarray(w.sum(axis=1)).ravel()
    has_friends = graph.degrees() > 0
    np.testing.assert_allclose(rowsum[has_friends], 1.0, rtol=1e-5)
    support = (w != 0).astype(np.int8)
    assert (support != support.T).nnz == 0, "friendship must be mutual"
    assert not w.diagonal().any(), "a user is not their own friend"
    assert graph.indices.dtype == np.int32 and graph.indptr.dtype == np.int64 and graph.weights.dtype == np.float32


@pytest.fixture(scope="module")
def graphs() -> dict[str, SocialGraph]:
    return {kind: build(kind) for kind in BUILT_KINDS}


# --- invariants of every builder -------------------------------------------------------------------


@pytest.mark.parametrize("kind", BUILT_KINDS)
def test_every_builder_gives_row_stochastic_symmetric_loop_free_graph(graphs, kind):
    assert_is_friendship_graph(graphs[kind])


@pytest.mark.parametrize("kind", BUILT_KINDS)
def test_mean_degree_is_within_ten_percent_of_requested(graphs, kind):
    assert graphs[kind].num_edges / NUM_USERS == pytest.approx(MEAN_DEGREE, rel=0.10)


@pytest.mark.parametrize("kind", BUILT_KINDS)
def test_same_seed_gives_the_same_graph(graphs, kind):
    again = build(kind)
    for name in ("indptr", "indices", "weights"):
        np.testing.assert_array_equal(getattr(again, name), getattr(graphs[kind], name))


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_another_seed_gives_another_graph(graphs, kind):
    assert edge_set(build(kind, seed=2)) != edge_set(graphs[kind])


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(RANDOM_KINDS), num_users=st.integers(8, 300),
       mean_degree=st.floats(0.5, 6.0), seed=st.integers(0, 2**32 - 1))
def test_any_small_random_graph_keeps_the_invariants(kind, num_users, mean_degree, seed):
    assert_is_friendship_graph(build(kind, seed=seed, num_users=num_users, mean_degree=mean_degree))


def test_kind_none_gives_nobody_friends():
    graph = build("none")
    assert graph.num_users == NUM_USERS and graph.num_edges == 0


def test_unknown_kind_is_rejected_with_the_valid_kinds():
    with pytest.raises(ValueError, match="valid kinds") as error:
        build("erdos")
    assert all(kind in str(error.value) for kind in SOCIAL_GRAPH_KINDS)


def test_sbm_without_persona_is_rejected_with_a_fix():
    with pytest.raises(ValueError, match="persona"):
        build_social_graph("sbm", num_users=10, rng=np.random.default_rng(0))


# --- homophilous block model ----------------------------------------------------------------------


def within_block_share(graph: SocialGraph, persona: Persona) -> float:
    block = persona.age_band.astype(np.int64) * 100 + persona.occupation
    src = np.repeat(np.arange(graph.num_users), graph.degrees())
    return float(np.mean(block[src] == block[graph.indices]))


def test_sbm_with_high_homophily_puts_far_more_friendships_inside_persona_blocks():
    persona = random_persona(NUM_USERS)
    homophilous = homophily_sbm(persona, MEAN_DEGREE, 0.9, np.random.default_rng(0))
    indifferent = homophily_sbm(persona, MEAN_DEGREE, 0.0, np.random.default_rng(0))
    assert within_block_share(homophilous, persona) == pytest.approx(0.9, abs=0.03)
    assert within_block_share(indifferent, persona) < 0.05  # ~ 1 / number of blocks


def test_sbm_keeps_the_mean_degree_when_blocks_are_too_small_to_hold_the_homophilous_friends():
    persona = random_persona(1_000)  # ~4 users per (age band, gender, occupation) block
    graph = homophily_sbm(persona, MEAN_DEGREE, 1.0, np.random.default_rng(0),
                          attributes=("age_band", "gender", "occupation"))
    assert graph.num_edges / persona.num_users == pytest.approx(MEAN_DEGREE, rel=0.10)


@pytest.mark.parametrize("homophily", [-0.1, 1.5])
def test_sbm_rejects_homophily_outside_zero_one(homophily):
    with pytest.raises(ValueError, match=r"homophily=.*\[0, 1\]"):
        homophily_sbm(random_persona(100), MEAN_DEGREE, homophily, np.random.default_rng(0))


@pytest.mark.parametrize("mean_degree", [0.0, -3.0])
def test_sbm_rejects_a_mean_degree_that_is_not_positive(mean_degree):
    with pytest.raises(ValueError, match="mean_degree.*> 0"):
        homophily_sbm(random_persona(100), mean_degree, 0.5, np.random.default_rng(0))


def test_sbm_rejects_an_unknown_persona_attribute_naming_the_valid_ones():
    with pytest.raises(ValueError, match="'income'.*age_band, gender, occupation"):
        homophily_sbm(random_persona(100), 5.0, 0.5, np.random.default_rng(0), attributes=("income",))


# --- small world, scale free, taste neighbors ------------------------------------------------------


def test_small_world_without_rewiring_is_the_ring_lattice():
    graph = small_world(50, 4.0, 0.0, np.random.default_rng(0))
    expected = {(u, (u + s) % 50) for u in range(50) for s in (-2, -1, 1, 2)}
    assert edge_set(graph) == expected


def test_scale_free_has_hubs_far_above_the_mean_degree():
    graph = scale_free(NUM_USERS, MEAN_DEGREE, 2.5, np.random.default_rng(0))
    assert graph.degrees().max() > 10 * MEAN_DEGREE


def test_knn_befriends_users_with_the_same_taste():
    rng = np.random.default_rng(0)
    centers = np.eye(8)[[0, 1]]  # two orthogonal tastes
    taste = centers[np.arange(40) % 2] + 0.01 * rng.normal(size=(40, 8))
    graph = knn_taste_graph(np.repeat(taste[:, None, :], 2, axis=1), k=3)
    src = np.repeat(np.arange(40), graph.degrees())
    assert np.all(src % 2 == graph.indices % 2)
    assert graph.degrees().min() >= 3


def test_knn_rejects_interests_without_the_interest_axis():
    with pytest.raises(ValueError, match=r"expected \(U, K, d\)"):
        knn_taste_graph(np.zeros((10, 4)), k=2)


# --- graphs given by the user ----------------------------------------------------------------------


def test_from_networkx_rejects_nodes_that_are_not_the_users_and_says_how_to_fix():
    graph = nx.relabel_nodes(nx.path_graph(4), {3: "dave"})
    with pytest.raises(ValueError) as error:
        SocialGraph.from_networkx(graph, num_users=5)
    message = str(error.value)
    assert "unexpected nodes ['dave']" in message
    assert "missing users [3, 4]" in message
    assert "convert_node_labels_to_integers" in message


def test_from_networkx_accepts_the_karate_club_for_34_users():
    club = nx.karate_club_graph()
    graph = SocialGraph.from_networkx(club, num_users=34)
    assert graph.num_users == 34
    assert graph.num_edges == 2 * club.number_of_edges()
    assert_is_friendship_graph(graph)


def test_to_networkx_and_back_preserves_the_friendships_and_weights(graphs):
    graph = graphs["small_world"]
    again = SocialGraph.from_networkx(graph.to_networkx(), graph.num_users)
    np.testing.assert_array_equal(again.indptr, graph.indptr)
    np.testing.assert_array_equal(again.indices, graph.indices)
    np.testing.assert_allclose(again.weights, graph.weights, rtol=1e-6)


def test_from_edgelist_reads_weights_comments_and_either_direction(tmp_path):
    path = tmp_path / "friends.txt"
    path.write_text("# u v weight\n0 1 2.0\n1 0 2.0\n\n0 2 1.0  # weaker tie\n3 3 5.0\n")
    graph = from_edgelist(path, num_users=4)
    assert edge_set(graph) == {(0, 1), (1, 0), (0, 2), (2, 0)}
    np.testing.assert_allclose(graph.to_scipy().toarray()[0], [0, 2 / 3, 1 / 3, 0], rtol=1e-6)
    assert graph.degrees()[3] == 0  # the self-loop is dropped


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("0 1\n1 2 3 4\n", 2, "4 fields"),
        ("0 1\n1 x\n", 2, "not a number"),
        ("0 1\n1 2 0.5\n", 2, "earlier lines have 2"),
        ("# header\n0 1\n\n1 9\n", 4, r"outside 0\.\.4"),
        ("0 1.5\n", 1, "not an integer"),
        ("0 1 -1\n", 1, "negative"),
    ],
)
def test_from_edgelist_names_the_file_and_line_of_a_malformed_line(tmp_path, text, line, problem):
    path = tmp_path / "friends.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"friends\.txt, line {line} .*{problem}"):
        from_edgelist(path, num_users=5)
