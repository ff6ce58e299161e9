"""Federated export registry, transparency log and aggregation (issue 10)."""
