"""The social graph of users, held as a row-normalised CSR matrix for the hot path.

``W[u, v] = A[u, v] / deg(u)``: row ``u`` says how much user ``u`` listens to each neighbor ``v``.
networkx graphs are accepted at the boundary (``from_networkx``) and rebuilt on demand
(``to_networkx``); the simulator itself only touches the three CSR arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class SocialGraph:
    """Row-normalised adjacency in CSR form.

    Attributes:
        indptr: (U + 1,) int64 row pointers.
        indices: (E,) int32 neighbor user indices.
        weights: (E,) float32 influence weights; each non-empty row sums to 1.
    """

    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray

    @property
    def num_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def num_edges(self) -> int:
        """Directed edges (an undirected friendship counts twice)."""
        return len(self.indices)

    def degrees(self) -> np.ndarray:
        return np.diff(self.indptr).astype(np.int32)

    @classmethod
    def empty(cls, num_users: int) -> "SocialGraph":
        return cls(np.zeros(num_users + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))

    @classmethod
    def from_adjacency(cls, adjacency: sp.sparray | sp.spmatrix) -> "SocialGraph":
        """Row-normalise any square sparse adjacency (weights >= 0; self-loops are dropped)."""
        a = sp.csr_array(adjacency, dtype=np.float32)
        if a.shape[0] != a.shape[1]:
            raise ValueError(f"social graph: adjacency must be square, got shape {a.shape}.")
        a.setdiag(0)
        a.eliminate_zeros()
        a.sum_duplicates()
        a.sort_indices()
        if a.nnz and a.data.min() < 0:
            raise ValueError("social graph: edge weights must be non-negative.")
        rowsum = np.asarray(a.sum(axis=1)).ravel()
        scale = np.divide(1.0, rowsum, out=np.zeros_like(rowsum), where=rowsum > 0)
        data = (a.data * np.repeat(scale, np.diff(a.indptr))).astype(np.float32)
        return cls(a.indptr.astype(np.int64), a.indices.astype(np.int32), data)

    @classmethod
    def from_edges(cls, num_users: int, src: np.ndarray, dst: np.ndarray, symmetric: bool = True) -> "SocialGraph":
        """Build from edge lists (duplicates merged, self-loops dropped)."""
        src = np.asarray(src, np.int64)
        dst = np.asarray(dst, np.int64)
        if symmetric:
            src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
        keep = src != dst
        a = sp.csr_array((np.ones(keep.sum(), np.float32), (src[keep], dst[keep])), shape=(num_users, num_users))
        a.data[:] = 1.0  # merged duplicates count once
        return cls.from_adjacency(a)

    @classmethod
    def from_networkx(cls, graph: nx.Graph, num_users: int) -> "SocialGraph":
        """Accept a user-given networkx graph whose nodes are exactly the user indices 0..U-1.

        Edge attribute ``weight`` (default 1) sets how strongly a user listens to a neighbor.
        """
        nodes = set(graph.nodes)
        expected = set(range(num_users))
        if nodes != expected:
            extra = sorted(nodes - expected, key=str)[:5]
            missing = sorted(expected - nodes)[:5]
            raise ValueError(
                f"social_graph: the graph's nodes must be the user indices 0..{num_users - 1} "
                f"(num_users={num_users}); got {graph.number_of_nodes()} nodes"
                + (f", unexpected nodes {extra}" if extra else "")
                + (f", missing users {missing}" if missing else "")
                + ". Fix: relabel with networkx.convert_node_labels_to_integers(graph) or set num_users to match."
            )
        a = nx.to_scipy_sparse_array(graph, nodelist=range(num_users), weight="weight", dtype=np.float32, format="csr")
        return cls.from_adjacency(a)

    def to_scipy(self) -> sp.csr_array:
        n = self.num_users
        return sp.csr_array((self.weights, self.indices, self.indptr), shape=(n, n))

    def to_networkx(self) -> nx.DiGraph:
        """A directed networkx view (edge ``weight`` = normalised influence); slow for millions of edges."""
        return nx.from_scipy_sparse_array(self.to_scipy(), create_using=nx.DiGraph)
