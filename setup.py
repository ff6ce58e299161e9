"""The C parts of privtel: privacy._pii_native and telemetry._ingest_native (metadata lives in pyproject.toml).

Optional: where no compiler is found, the build goes on without them, and privacy.pii and ingest's
validation run their Python paths only.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(name, [source], optional=True, extra_compile_args=["-O2"])
                   for name, source in (("privacy._pii_native", "privacy/_pii_native.c"),
                                        ("telemetry._ingest_native", "telemetry/_ingest_native.c"))])
