"""Every CUDA source under workbench/ compiles with nvcc (they cannot run without a GPU)."""
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCES = sorted((Path(__file__).resolve().parents[1] / "workbench").rglob("*.cu"))
NVCC = shutil.which("nvcc")


def test_there_are_cuda_sources():
    assert SOURCES, "no .cu files found under workbench/"


@pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA compiler) is not installed on this machine")
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_compiles_with_nvcc(src, tmp_path):
    r = subprocess.run([NVCC, "-arch=sm_80", "-std=c++17", "-c", str(src), "-o", str(tmp_path / "k.o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    assert (tmp_path / "k.o").stat().st_size > 0
