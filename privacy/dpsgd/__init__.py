"""DP-SGD training, framework-free (PyTorch, no Django).

* :mod:`privacy.dpsgd.engine` — per-example gradients (``torch.func``), per-example L2
  clipping, Gaussian noise from a CSPRNG-seeded generator, Poisson sampling, physical
  batches separate from the logical batch, and the optimizer step.
* :mod:`privacy.dpsgd.models` — the model zoo (logistic regression, MLP, the small MNIST CNN).
* :mod:`privacy.dpsgd.datasets` — IDX (MNIST), NPZ and CSV readers and scikit-learn's digits;
  numpy only, so the service can validate an upload without torch.

This package's ``__init__`` imports nothing: torch is the ``[train]`` extra, loaded only by
the modules that need it. The privacy accounting of a run (its
``PoissonSampledGaussianEvent``, ε by PLD and RDP, calibration of σ) lives in
:mod:`accounting.calibration`, one layer up.
"""
