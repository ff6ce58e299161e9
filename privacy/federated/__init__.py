"""The export registry's framework-free core, shared by the server (``federation/``) and the SDK.

* :mod:`privacy.federated.canonical`: the one canonical JSON encoding (RFC 8785, JCS) that is signed and logged;
* :mod:`privacy.federated.signing`: Ed25519 signatures over canonical bytes, key loading, contributor
  pseudonyms, and the log's signed tree heads with key rotation;
* :mod:`privacy.federated.transparency`: the RFC 6962 / RFC 9162 Merkle tree log, its O(log n) inclusion and
  consistency proofs and their verifiers, and the audit of stored entries against signed heads;
* :mod:`privacy.federated.priors`: Beta priors and their version-aware merge (the spec's ImportMerger).

No Django: ``tests/test_import_contract.py`` checks it, statically and at run time.
"""
