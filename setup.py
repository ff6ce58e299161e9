"""The C part of privtel: privacy._pii_native (metadata lives in pyproject.toml).

Optional: where no compiler is found, the build goes on without it and privacy.pii runs its
Python engine only.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("privacy._pii_native", ["privacy/_pii_native.c"], optional=True,
                             extra_compile_args=["-O2"])])
