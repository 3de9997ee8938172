"""Every CUDA source under workbench/ compiles with nvcc for the A100 (sm_80) and H100/H200 (sm_90) architectures
(they cannot run without a GPU; their index math is emulated on the CPU in tests/test_sparse.py). One nvcc call per
source builds both architectures; -DBS_K=6 instantiates the compile-time-k entry points next to the run-time-k ones.
"""
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCES = sorted((Path(__file__).resolve().parents[1] / "workbench").rglob("*.cu"))
NVCC = shutil.which("nvcc")
ARCHS = ("80", "90")


def test_there_are_cuda_sources():
    assert SOURCES, "no .cu files found under workbench/"


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
    if cuobjdump:  # both architectures are in the object
        listing = subprocess.run([cuobjdump, "--list-elf", str(tmp_path / "k.o")], capture_output=True, text=True)
        for a in ARCHS:
            assert f"sm_{a}" in listing.stdout
