"""Framework-free differential-privacy core.

Nothing in this package imports Django: it is pure math over numpy and
``cryptography`` so that it can be tested and benchmarked alone, and reused by
the client SDK.
"""
