"""The federated export registry (issue 10).

For now only its framework-free core, importable without Django:

* :mod:`federation.canonical`: the one canonical JSON encoding (RFC 8785, JCS) that is signed and logged;
* :mod:`federation.signing`: Ed25519 signatures over canonical bytes, key loading, contributor
  pseudonyms, and the log's signed tree heads with key rotation;
* :mod:`federation.transparency`: the RFC 6962 / RFC 9162 Merkle tree log, its O(log n) inclusion and
  consistency proofs and their verifiers, and the audit of stored entries against signed heads;
* :mod:`federation.aggregation`: FedAvg, FedProx, weighted and robust aggregation rules, prior merging.
"""
