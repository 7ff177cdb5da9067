"""Ecosystem metrics against independent implementations."""

from __future__ import annotations

import networkx as nx
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sim.metrics import largest_component


@given(st.integers(1, 80), st.lists(st.tuples(st.integers(0, 79), st.integers(0, 79)),
                                    max_size=120))
def test_largest_component_equals_networkx(n, edges):
    e = np.array([(a % n, b % n) for a, b in edges], dtype=np.int64).reshape(-1, 2)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(e.tolist())
    assert largest_component(n, e) == max(len(c) for c in nx.connected_components(g))


def test_largest_component_large_path_uses_the_same_answer():
    rng = np.random.default_rng(3)
    n = 30_000
    e = rng.integers(0, n, (25_000, 2))
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(e.tolist())
    assert largest_component(n, e) == max(len(c) for c in nx.connected_components(g))
