"""Balanced Sparsity (Yao et al., AAAI 2019): pruning masks (prune), the packed balanced format (formats),
CPU and CuPy GPU kernels (kernels/), and sparse inference modules (nn).

Import the submodules directly (``from workbench.sparse.formats import BalancedMatrix``); this package
imports nothing heavy (no numba, no cupy) at import time.
"""
