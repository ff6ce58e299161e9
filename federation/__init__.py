"""The federated export registry (issue 10) and DP-SGD training jobs.

The framework-free core that the SDK shares (canonical JSON, signatures, the Merkle log, prior
merging) lives in :mod:`privacy.federated`; :mod:`federation.aggregation` holds the aggregation
strategies (pure numpy), :mod:`federation.rounds` the aggregation rounds.
"""
