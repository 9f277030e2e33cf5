"""consist-topological: Topological consistency for consist: matching hypergraph, hypergraph propagation, community selection, topological RANSAC (in development)."""

__version__ = "0.1.0"
