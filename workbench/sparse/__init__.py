"""Balanced Sparsity (Yao et al., AAAI 2019): pruning masks (prune), the packed balanced format (formats),
CPU kernels (kernels/cpu.py: C++ on torch's thread pool, numba fallback) and CuPy GPU kernels (kernels/gpu.py,
with a CPU emulation in kernels/gpu_emulate.py), the dense/sparse dispatcher with its measured crossover table
(dispatch, crossover.json), sparse inference modules (nn), and the measurements behind the notebook and dashboard
(measure, timing).

Import the submodules directly (``from workbench.sparse.formats import BalancedMatrix``); this package
imports nothing heavy (no numba, no cupy, no C++ build) at import time: the C++ kernels are built at first use.
"""
