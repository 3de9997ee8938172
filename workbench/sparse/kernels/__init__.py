"""Kernels for the balanced product y = W x: ``cpu`` (numba) and ``gpu`` (CuPy RawModule over balanced.cu)."""
