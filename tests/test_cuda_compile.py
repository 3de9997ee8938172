"""Every CUDA source under workbench/ compiles with nvcc for the H100/H200 architecture (sm_90), warnings as errors
(they cannot run without a GPU; their index math is emulated on the CPU in tests/test_sparse.py); -DBS_K=6
instantiates the compile-time-k entry points next to the run-time-k ones. CuPy compiles the same sources at run time
for the GPU it finds. The sources have no architecture-specific branch (no ``__CUDA_ARCH__``; a test checks), so a
second architecture (A100, sm_80) would compile the same code again: it doubled this test's time (43 s vs 22 s)
and is left to ``WORKBENCH_NVCC_ARCHS="80 90"``.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCES = sorted((Path(__file__).resolve().parents[1] / "workbench").rglob("*.cu"))
NVCC = shutil.which("nvcc")
ARCHS = tuple(os.environ.get("WORKBENCH_NVCC_ARCHS", "90").split())


def test_there_are_cuda_sources():
    assert SOURCES, "no .cu files found under workbench/"


def test_sources_do_not_branch_on_the_architecture():
    """Compiling one architecture covers the code the others compile (see the module docstring)."""
    for src in SOURCES:
        assert "__CUDA_ARCH__" not in src.read_text(), f"{src.name} branches on __CUDA_ARCH__: compile every target"


@pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA compiler) is not installed on this machine")
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_compiles_with_nvcc(src, tmp_path):
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    r = subprocess.run([NVCC, *gencode, "-std=c++17", "-DBS_K=6", "-Werror", "all-warnings", "-c", str(src),
                        "-o", str(tmp_path / "k.o")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert (tmp_path / "k.o").stat().st_size > 0
    cuobjdump = shutil.which("cuobjdump") or (str(Path(NVCC).with_name("cuobjdump"))
                                              if Path(NVCC).with_name("cuobjdump").exists() else None)
    if cuobjdump:  # every requested architecture is in the object
        listing = subprocess.run([cuobjdump, "--list-elf", str(tmp_path / "k.o")], capture_output=True, text=True)
        for a in ARCHS:
            assert f"sm_{a}" in listing.stdout
