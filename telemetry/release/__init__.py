"""Central-DP releases: the only way analysts see data.

``request`` parses a query; ``service`` charges it to the ledger and makes the
release (raw counts on a data-independent ``grid`` -> exact discrete Laplace ->
stored with ``codec`` and the sealed seed); ``postprocess`` turns stored noisy
counts into released cells; ``responses`` writes the JSON; ``audit`` replays one.
"""
