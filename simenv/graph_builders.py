"""Fast builders of the social graph: homophilous blocks, small worlds, scale-free hubs, taste neighbors.

Every builder samples undirected friendships as whole numpy arrays (no Python loop per user or per
edge; networkx's own generators take minutes at a million users) and returns a ``SocialGraph``:
symmetric in support, without self-loops, each non-empty row summing to 1. Randomness comes only
from the ``rng`` argument, so the same generator state always gives the same graph.

- ``sbm``: ``homophily_sbm``, friends mostly share a persona block; O(E log E).
- ``small_world``: ``small_world``, a Watts-Strogatz ring lattice with rewiring; O(E log E).
- ``scale_free``: ``scale_free``, Chung-Lu with power-law expected degrees; O(E log E).
- ``knn``: ``knn_taste_graph``, friends with the most similar tastes; O(U^2 d).
- ``none``: ``SocialGraph.empty``, nobody has friends; O(U).

(The log factor is the one sort that merges duplicate edges into CSR.) User-given graphs enter
through ``from_edgelist`` or ``SocialGraph.from_networkx``.
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import scipy.sparse as sp

from simenv.persona import Persona
from simenv.social import SocialGraph

SOCIAL_GRAPH_KINDS = ("sbm", "small_world", "scale_free", "knn", "none")
PERSONA_ATTRIBUTES = ("age_band", "gender", "occupation")

_DENSE_BLOCK_PROB = 0.25  # above this within-block edge probability, flipping a coin per pair is cheaper
_MAX_TOPUP_ROUNDS = 64  # resampling rounds to replace merged duplicates (each removes most of the rest)
_KNN_CHUNK_ENTRIES = 1 << 24  # similarity entries per matmul chunk: 64 MiB of float32


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------


def homophily_sbm(
    persona: Persona,
    mean_degree: float,
    homophily: float,
    rng: np.random.Generator,
    attributes: tuple[str, ...] = ("age_band", "occupation"),
) -> SocialGraph:
    """A stochastic block model whose blocks are the users sharing every attribute in ``attributes``.

    With ``d = mean_degree``, ``h = homophily``, ``n_b`` users in block ``b`` and ``U`` users, the
    pair ``(u, v)`` with ``u`` in ``b`` is a friendship with probability

        p_in(b)  = min(1, h d / (n_b - 1))         # inside the block, an exact Bernoulli per pair
        p_out    = w_u w_v / sum(w),  w_u = d - (n_b - 1) p_in(b)     # everyone, Chung-Lu style

    so every user's expected degree is ``(n_b - 1) p_in(b) + w_u = d``. When every block has at
    least ``h d + 1`` users, ``w_u = (1 - h) d`` for all users: the outside edges fall uniformly
    (``p_out = (1 - h) d / U``) and a share ``h + (1 - h) n_b / U`` of a user's edges lies in their
    block. A block too small to hold ``h d`` friends per member becomes a clique, and its members
    take the missing friendships from the uniform pool instead, so the mean degree stays ``d``.
    Outside edges landing on an inside edge or on each other are merged, which loses a share of
    about ``p_in(b) n_b / U + d / U`` of the outside edges (negligible unless blocks are cliques).

    Args:
        persona: the users' persona; ``persona.num_users`` is ``U``.
        mean_degree: expected friends per user, ``0 < d <= U - 1``.
        homophily: share ``h`` in [0, 1] of each user's expected friends inside their block.
        rng: the only source of randomness.
        attributes: persona attribute names whose combinations are the blocks, from
            ``PERSONA_ATTRIBUTES``; ``()`` makes one block, i.e. an Erdos-Renyi graph.

    Sampling: the inside edge count of a sparse block is ``Binomial(n_b (n_b - 1) / 2, p_in(b))``
    and its edges a uniform set of distinct pairs (sampled with replacement, duplicates replaced),
    which is exactly the Bernoulli model; the outside edges are ``Poisson(sum(w) / 2)`` pairs with
    endpoints drawn proportionally to ``w``.
    """
    num_users = persona.num_users
    _check_mean_degree(mean_degree, num_users)
    if not 0.0 <= homophily <= 1.0:
        raise ValueError(
            f"homophily_sbm: homophily={homophily!r} is not a share; expected a number in [0, 1] "
            "(0 = friends uniformly at random, 1 = friends only inside the persona block)."
        )
    block = _block_ids(persona, attributes)
    sizes = np.bincount(block).astype(np.int64)
    p_in = np.where(sizes > 1, np.minimum(1.0, homophily * mean_degree / np.maximum(sizes - 1, 1)), 0.0)
    src_in, dst_in = _sample_within_blocks(block, sizes, p_in, rng)

    outside = (mean_degree - (sizes - 1) * p_in)[block]  # (U,) w_u
    num_outside = int(rng.poisson(outside.sum() / 2.0))
    src_out, dst_out = _weighted_pairs(outside, num_outside, rng)
    return SocialGraph.from_edges(num_users, np.concatenate([src_in, src_out]), np.concatenate([dst_in, dst_out]))


def small_world(num_users: int, mean_degree: float, rewire_prob: float, rng: np.random.Generator) -> SocialGraph:
    """A Watts-Strogatz small world: a ring lattice with each edge's far end rewired with ``rewire_prob``.

    User ``u`` starts linked to ``u +- 1, ..., u +- k/2`` (mod ``U``) with ``k = 2 round(d / 2)``
    (at least 2), giving ``U k / 2`` edges; each edge independently keeps ``u`` and moves its other
    end to a uniform user other than ``u`` with probability ``rewire_prob``. Unlike networkx, a
    rewired edge that lands on an existing one is merged rather than redrawn, which loses about
    ``k / U`` of the degree. ``rewire_prob = 0`` is the lattice (high clustering, long paths),
    ``1`` is close to a random graph; ~0.1 is the small-world regime (clustered and short paths).
    """
    _check_mean_degree(mean_degree, num_users)
    if not 0.0 <= rewire_prob <= 1.0:
        raise ValueError(f"small_world: rewire_prob={rewire_prob!r} is not a probability; expected a number in [0, 1].")
    half = max(1, round(mean_degree / 2))
    if 2 * half >= num_users:
        raise ValueError(
            f"small_world: a ring lattice of degree k={2 * half} needs more than k users, got num_users={num_users}; "
            "lower mean_degree or add users."
        )
    src = np.repeat(np.arange(num_users, dtype=np.int64), half)
    dst = (src + np.tile(np.arange(1, half + 1, dtype=np.int64), num_users)) % num_users
    rewired = np.flatnonzero(rng.random(len(src)) < rewire_prob)
    dst[rewired] = (src[rewired] + 1 + rng.integers(0, num_users - 1, size=len(rewired))) % num_users  # never u itself
    return SocialGraph.from_edges(num_users, src, dst)


def scale_free(num_users: int, mean_degree: float, exponent: float = 2.5,
               rng: np.random.Generator | None = None) -> SocialGraph:
    """A Chung-Lu graph whose expected degrees follow a power law ``P(deg = x) ~ x^-exponent``.

    Expected degrees ``w_i ~ (i + 1)^(-1 / (exponent - 1))`` for ranks ``i = 0..U-1`` (assigned to
    users in random order) are scaled to ``sum(w) = U d`` and capped at the structural cutoff
    ``sqrt(U d)``, so that the Chung-Lu pair probability ``w_u w_v / sum(w)`` stays <= 1 (the cap
    and rescaling are repeated until both hold). Then ``E = round(U d / 2)`` distinct edges are
    drawn with both endpoints proportional to ``w``; self-loops and repeats are redrawn, so the
    mean degree is exactly ``2 E / U`` while the hubs come out slightly below ``w``.

    Args:
        exponent: tail exponent ``> 1``; social networks typically show 2 to 3 (hubs grow with
            ``U^(1 / (exponent - 1))`` until capped).
        rng: the only source of randomness (required).
    """
    if rng is None:
        raise ValueError("scale_free: rng is required, e.g. rng=np.random.default_rng(seed).")
    _check_mean_degree(mean_degree, num_users)
    if not exponent > 1.0:
        raise ValueError(f"scale_free: exponent={exponent!r} must be > 1 (a power-law tail); 2.5 is typical.")
    total = num_users * mean_degree
    ranks = np.arange(1, num_users + 1, dtype=np.float64)
    weights = ranks ** (-1.0 / (exponent - 1.0))
    cap = math.sqrt(total)
    for _ in range(100):  # fixed point of "scale to the total, cap at sqrt(total)"
        weights *= total / weights.sum()
        if weights.max() <= cap * (1 + 1e-9):
            break
        np.minimum(weights, cap, out=weights)
    weights = weights[rng.permutation(num_users)]
    num_edges = min(round(total / 2), num_users * (num_users - 1) // 2)
    src, dst = _distinct_weighted_edges(weights, num_edges, rng)
    return SocialGraph.from_edges(num_users, src, dst)


def knn_taste_graph(interests: np.ndarray, k: int) -> SocialGraph:
    """Friends from data: each user befriends the ``k`` users whose mean interest is most similar.

    Similarity is the cosine between users' mean interest vectors ``m_u = mean_j interests[u, j]``
    (a zero vector is similar to nobody). Friendship is symmetrised, so every degree is at
    least ``k`` and the mean degree lies in ``[k, 2k]`` (``2k`` when no choice is mutual). Cost is
    O(U^2 d) time, computed in row chunks so memory stays O(U k + 2^24): 10,000 users take about
    two seconds; beyond ~100,000 users use ``homophily_sbm``.

    Args:
        interests: (U, K, d) each user's K interest vectors.
        k: neighbors chosen per user, ``1 <= k <= U - 1``.
    """
    taste = _mean_taste(interests)
    num_users = len(taste)
    _check_knn_k(k, num_users)
    return _knn_graph(_nearest_neighbors(taste, k))


def from_edgelist(path: str | os.PathLike, num_users: int) -> SocialGraph:
    """Read friendships from a text file of lines ``u v [weight]`` (0-based user indices).

    Fields are separated by whitespace; ``#`` starts a comment; blank lines are skipped. Either
    every line has a weight (a finite number >= 0: how strongly the two listen to each other) or
    none does (all 1). Friendships are undirected: ``u v`` also links ``v`` to ``u``, and a pair
    listed more than once, in either order, keeps its largest weight (so files listing both
    directions read the same as files listing one). Self-loops are dropped.
    """
    path = os.fspath(path)
    if not (isinstance(num_users, (int, np.integer)) and num_users > 0):
        raise ValueError(f"from_edgelist: num_users={num_users!r} must be a positive integer "
                         "(the users are 0..num_users-1).")
    table = _read_edge_table(path)
    if table.shape[1] not in (2, 3):
        _raise_at_row(path, 0, f"has {table.shape[1]} fields; expected 'u v' or 'u v weight'")
    ends = table[:, :2]
    bad = np.flatnonzero(~np.isfinite(ends).all(axis=1) | (ends != np.round(ends)).any(axis=1))
    if len(bad):
        _raise_at_row(path, bad[0], "has a user index that is not an integer; user indices are 0-based integers")
    bad = np.flatnonzero(((ends < 0) | (ends >= num_users)).any(axis=1))
    if len(bad):
        _raise_at_row(path, bad[0], f"names a user outside 0..{num_users - 1} (num_users={num_users}); "
                                    "renumber users from 0 or raise num_users")
    weight = table[:, 2] if table.shape[1] == 3 else np.ones(len(table))
    bad = np.flatnonzero(~np.isfinite(weight) | (weight < 0))
    if len(bad):
        _raise_at_row(path, bad[0], "has a weight that is negative or not finite; weights are numbers >= 0")

    src, dst = ends[:, 0].astype(np.int64), ends[:, 1].astype(np.int64)
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    keep = lo != hi
    key, weight = lo[keep] * num_users + hi[keep], weight[keep]
    order = np.lexsort((weight, key))  # by pair, then weight: the last of each run is its largest
    key, weight = key[order], weight[order]
    last = np.flatnonzero(np.append(key[1:] != key[:-1], True)) if len(key) else np.zeros(0, np.int64)
    lo, hi, weight = key[last] // num_users, key[last] % num_users, weight[last]
    adjacency = sp.coo_array((np.concatenate([weight, weight]), (np.concatenate([lo, hi]), np.concatenate([hi, lo]))),
                             shape=(num_users, num_users))
    return SocialGraph.from_adjacency(adjacency.tocsr())


def build_social_graph(
    kind: str = "sbm",
    *,
    num_users: int,
    persona: Persona | None = None,
    interests: np.ndarray | None = None,
    mean_degree: float = 10.0,
    homophily: float = 0.8,
    rewire_prob: float = 0.1,
    exponent: float = 2.5,
    rng: np.random.Generator,
) -> SocialGraph:
    """Build the social graph named by ``kind`` (one of ``SOCIAL_GRAPH_KINDS``) for ``num_users`` users.

    ``sbm`` (default) needs ``persona``; ``knn`` needs ``interests`` and picks the number of
    neighbors ``k`` whose symmetrised graph has the mean degree closest to ``mean_degree``;
    ``none`` gives users no friends. Parameters a kind does not use are ignored.
    """
    if kind == "sbm":
        if persona is None or persona.num_users != num_users:
            got = "none" if persona is None else f"one of {persona.num_users} users"
            raise ValueError(f"social graph 'sbm': needs the persona of all {num_users} users, got {got}; "
                             "pass persona=..., or choose kind='small_world' which needs none.")
        return homophily_sbm(persona, mean_degree, homophily, rng)
    if kind == "small_world":
        return small_world(num_users, mean_degree, rewire_prob, rng)
    if kind == "scale_free":
        return scale_free(num_users, mean_degree, exponent, rng)
    if kind == "knn":
        if interests is None or len(interests) != num_users:
            got = "none" if interests is None else f"an array of shape {np.shape(interests)}"
            raise ValueError(f"social graph 'knn': needs interests of shape ({num_users}, K, d), got {got}.")
        taste = _mean_taste(interests)
        _check_mean_degree(mean_degree, num_users)
        nearest = _nearest_neighbors(taste, min(num_users - 1, max(1, math.ceil(mean_degree))))
        return _knn_graph(nearest[:, :_knn_k_for_mean_degree(nearest, mean_degree)])
    if kind == "none":
        return SocialGraph.empty(num_users)
    raise ValueError(f"social graph: unknown kind {kind!r}; valid kinds are {', '.join(SOCIAL_GRAPH_KINDS)}.")


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def _check_mean_degree(mean_degree: float, num_users: int) -> None:
    if not mean_degree > 0:
        raise ValueError(f"social graph: mean_degree={mean_degree!r} must be > 0 (friends per user); "
                         "for no friends use kind='none'.")
    if num_users < 2 or mean_degree > num_users - 1:
        raise ValueError(f"social graph: mean_degree={mean_degree!r} is more than the {max(num_users - 1, 0)} "
                         f"other users a user can befriend (num_users={num_users}); lower mean_degree.")


def _check_knn_k(k: int, num_users: int) -> None:
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= num_users - 1):
        raise ValueError(f"knn_taste_graph: k={k!r} must be an integer in 1..{num_users - 1} (num_users - 1).")


# --------------------------------------------------------------------------------------------------
# Block model
# --------------------------------------------------------------------------------------------------


def _block_ids(persona: Persona, attributes: tuple[str, ...]) -> np.ndarray:
    """(U,) int64 block index in 0..B-1 of each user: one block per combination of attribute codes."""
    code = np.zeros(persona.num_users, np.int64)
    for name in attributes:
        if name not in PERSONA_ATTRIBUTES:
            raise ValueError(f"homophily_sbm: unknown persona attribute {name!r} in attributes={attributes!r}; "
                             f"choose from {', '.join(PERSONA_ATTRIBUTES)}.")
        values = np.asarray(getattr(persona, name), np.int64)
        code = code * (int(values.max(initial=0)) + 1) + values
    return np.unique(code, return_inverse=True)[1].ravel()


def _sample_within_blocks(block: np.ndarray, sizes: np.ndarray, prob: np.ndarray,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Independent Bernoulli(prob[b]) edges on every pair of users in the same block.

    Each block's pairs are numbered ``t = 0..n_b (n_b - 1) / 2 - 1``. Dense blocks flip a coin per
    pair (cost O(pairs) = O(edges / prob)); sparse blocks draw a Binomial edge count and that many
    distinct pair numbers, which has the same distribution at cost O(edges).

    Returns: (src, dst), each (E_in,) int64 user indices.
    """
    order = np.argsort(block, kind="stable")
    first = np.cumsum(sizes) - sizes  # position in `order` of each block's first user
    pairs = sizes * (sizes - 1) // 2
    dense = (prob > _DENSE_BLOCK_PROB) & (pairs > 0)
    sparse = (prob > 0) & ~dense & (pairs > 0)

    dense_blocks = np.flatnonzero(dense)
    blk_dense = np.repeat(dense_blocks, pairs[dense_blocks])
    dense_pairs = pairs[dense_blocks]
    t_dense = np.arange(len(blk_dense), dtype=np.int64) - np.repeat(np.cumsum(dense_pairs) - dense_pairs, dense_pairs)
    coin = rng.random(len(blk_dense)) < prob[blk_dense]
    blk_dense, t_dense = blk_dense[coin], t_dense[coin]

    sparse_blocks = np.flatnonzero(sparse)
    counts = rng.binomial(pairs[sparse_blocks], prob[sparse_blocks])
    slot, t_sparse = _distinct_draws(pairs[sparse_blocks], counts, rng)
    blk_sparse = sparse_blocks[slot]

    blk = np.concatenate([blk_dense, blk_sparse])
    i, j = _pair_from_index(np.concatenate([t_dense, t_sparse]))
    return order[first[blk] + i], order[first[blk] + j]


def _distinct_draws(ranges: np.ndarray, counts: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each slot s, ``counts[s]`` distinct integers drawn uniformly from ``0..ranges[s]-1``.

    Draws with replacement, then redraws only the repeats (each round leaves a share of about
    ``counts / ranges`` of the previous deficit), so the kept set is a uniform subset of its size.

    Returns: (slot, value), each (sum(counts),) int64.
    """
    offset = np.cumsum(ranges) - ranges  # one global id space: id = offset[slot] + value
    have = np.zeros(0, np.int64)  # sorted distinct ids so far
    deficit = counts.astype(np.int64)
    for _ in range(_MAX_TOPUP_ROUNDS):
        if not deficit.any():
            break
        slot = np.repeat(np.arange(len(ranges)), deficit)
        new = _sorted_unique(offset[slot] + rng.integers(0, ranges[slot]))
        if len(have):
            pos = np.minimum(np.searchsorted(have, new), len(have) - 1)
            new = new[have[pos] != new]
        have = np.sort(np.concatenate([have, new]), kind="stable")  # a sorted run plus a short tail
        deficit -= np.bincount(np.searchsorted(offset, new, side="right") - 1, minlength=len(ranges))
    slot = np.searchsorted(offset, have, side="right") - 1
    return slot, have - offset[slot]


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int array (``np.unique`` hashes int64 several times slower)."""
    keys = np.sort(keys)
    return keys[np.append(True, keys[1:] != keys[:-1])] if len(keys) else keys


def _pair_from_index(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode pair numbers ``t = j (j - 1) / 2 + i`` into ``(i, j)`` with ``0 <= i < j``.

    ``j = floor((1 + sqrt(1 + 8 t)) / 2)``, corrected by one where float rounding misses.
    """
    j = ((1.0 + np.sqrt(1.0 + 8.0 * t.astype(np.float64))) / 2.0).astype(np.int64)
    j -= j * (j - 1) // 2 > t
    j += (j + 1) * j // 2 <= t
    return t - j * (j - 1) // 2, j


def _weighted_pairs(weights: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``size`` pairs of users, every endpoint drawn independently with probability ``weights / sum(weights)``.

    Drawn as multinomial endpoint counts in random order, which is the same distribution as
    independent draws and several times faster than a binary search per endpoint at 1M users.

    Returns: (a, b), each (size,) int64.
    """
    if np.ptp(weights) <= 1e-12 * weights.max(initial=1.0):  # uniform
        ends = rng.integers(0, len(weights), size=2 * size)
    else:
        counts = rng.multinomial(2 * size, weights / weights.sum())
        ends = np.repeat(np.arange(len(weights), dtype=np.int64), counts)
        rng.shuffle(ends)
    return ends[:size], ends[size:]


def _distinct_weighted_edges(weights: np.ndarray, num_edges: int,
                             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``num_edges`` distinct undirected pairs ``u != v``, endpoints drawn proportionally to ``weights``.

    Self-loops and repeats are redrawn for up to ``_MAX_TOPUP_ROUNDS`` rounds (fewer edges only if
    the weights cannot support that many distinct pairs).
    """
    n = len(weights)
    have = np.zeros(0, np.int64)  # sorted keys lo * n + hi
    for _ in range(_MAX_TOPUP_ROUNDS):
        deficit = num_edges - len(have)
        if deficit <= 0:
            break
        a, b = _weighted_pairs(weights, deficit, rng)
        keep = a != b
        new = np.minimum(a, b)[keep] * n + np.maximum(a, b)[keep]
        have = _sorted_unique(np.concatenate([have, new]))  # at most num_edges: `deficit` new pairs at most
    return have // n, have % n


# --------------------------------------------------------------------------------------------------
# Taste neighbors
# --------------------------------------------------------------------------------------------------


def _mean_taste(interests: np.ndarray) -> np.ndarray:
    """(U, d) float32 unit-norm mean interest per user (zero where the mean is zero)."""
    interests = np.asarray(interests)
    if interests.ndim != 3:
        raise ValueError(f"knn_taste_graph: interests has shape {interests.shape}; expected (U, K, d). "
                         "For one vector per user, pass interests[:, None, :].")
    taste = interests.mean(axis=1, dtype=np.float64)
    norm = np.linalg.norm(taste, axis=1, keepdims=True)
    return np.divide(taste, norm, out=np.zeros_like(taste), where=norm > 0).astype(np.float32)


def _nearest_neighbors(taste: np.ndarray, k: int) -> np.ndarray:
    """(U, k) int64 each user's k most cosine-similar other users, most similar first.

    Args:
        taste: (U, d) unit-norm rows.
    """
    num_users = len(taste)
    chunk = max(1, _KNN_CHUNK_ENTRIES // max(num_users, 1))
    out = np.empty((num_users, k), np.int64)
    for start in range(0, num_users, chunk):  # one loop per chunk of rows, not per user
        rows = np.arange(start, min(start + chunk, num_users))
        sim = taste[rows] @ taste.T  # (chunk, U)
        sim[np.arange(len(rows)), rows] = -np.inf  # never one's own friend
        top = np.argpartition(sim, num_users - k, axis=1)[:, num_users - k:]
        rank = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        out[rows] = np.take_along_axis(top, rank, axis=1)
    return out


def _knn_graph(nearest: np.ndarray) -> SocialGraph:
    """The symmetrised graph linking each user u to every user in ``nearest[u]`` ((U, k) int)."""
    num_users, k = nearest.shape
    return SocialGraph.from_edges(num_users, np.repeat(np.arange(num_users), k), nearest.ravel())


def _knn_mean_degree(nearest: np.ndarray) -> float:
    """Mean degree of ``_knn_graph(nearest)`` without building it: 2 * distinct pairs / U."""
    num_users, k = nearest.shape
    src = np.repeat(np.arange(num_users, dtype=np.int64), k)
    dst = nearest.ravel()
    return 2.0 * len(_sorted_unique(np.minimum(src, dst) * num_users + np.maximum(src, dst))) / num_users


def _knn_k_for_mean_degree(nearest: np.ndarray, mean_degree: float) -> int:
    """The k <= nearest.shape[1] whose symmetrised k-nearest graph has mean degree closest to the target.

    The mean degree grows with k, so binary search finds the smallest k reaching the target.
    """
    lo, hi = 1, nearest.shape[1]
    while lo < hi:
        mid = (lo + hi) // 2
        if _knn_mean_degree(nearest[:, :mid]) >= mean_degree:
            hi = mid
        else:
            lo = mid + 1
    if lo > 1 and (mean_degree - _knn_mean_degree(nearest[:, : lo - 1])
                   < _knn_mean_degree(nearest[:, :lo]) - mean_degree):
        return lo - 1
    return lo


# --------------------------------------------------------------------------------------------------
# Edge-list files
# --------------------------------------------------------------------------------------------------


def _read_edge_table(path: str) -> np.ndarray:
    """(E, 2 or 3) float64 fields of the data lines; a malformed line raises naming file and line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an empty file is an empty graph
            table = np.loadtxt(path, dtype=np.float64, comments="#", ndmin=2)
    except FileNotFoundError:
        raise FileNotFoundError(f"from_edgelist: no edge-list file at {path!r}.") from None
    except ValueError as error:
        _raise_first_malformed_line(path)
        raise ValueError(f"from_edgelist: {path}: cannot parse ({error}); expected lines 'u v [weight]'.") from error
    return table if table.size else np.zeros((0, 2))


def _data_lines(path: str):
    """Yield (line number, fields) of the lines that carry data, as ``np.loadtxt`` reads them."""
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split("#", 1)[0].split()
            if fields:
                yield number, line.rstrip("\n"), fields


def _raise_first_malformed_line(path: str) -> None:
    """Find the line that broke the fast parser and raise a ValueError naming it (error path only)."""
    width = None
    for number, line, fields in _data_lines(path):
        if len(fields) not in (2, 3):
            _raise_line(path, number, line, f"has {len(fields)} fields; expected 'u v' or 'u v weight'")
        try:
            [float(f) for f in fields]
        except ValueError:
            _raise_line(path, number, line, "has a field that is not a number; expected 'u v [weight]'")
        if width is not None and len(fields) != width:
            _raise_line(path, number, line, f"has {len(fields)} fields but earlier lines have {width}; "
                                            "give every line a weight or none")
        width = len(fields)


def _raise_at_row(path: str, row: int, problem: str) -> None:
    """Raise for the ``row``-th data line (0-based), finding its line number by rereading the file."""
    for index, (number, line, _) in enumerate(_data_lines(path)):
        if index == row:
            _raise_line(path, number, line, problem)
    raise ValueError(f"from_edgelist: {path}: data line {row + 1} {problem}.")


def _raise_line(path: str, number: int, line: str, problem: str) -> None:
    raise ValueError(f"from_edgelist: {path}, line {number} ({line.strip()!r}) {problem}.")
