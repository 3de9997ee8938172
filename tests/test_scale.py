"""Paper scale (``--scale paper``): every study's dry run under torchrun with two gloo processes on tiny data.

Each dry run trains every arm of the study's paper recipe for one optimizer step (``scale.DRY_STEPS``) on a full-size backbone and
evaluates it once; each process writes ``dry-run/rank<r>.json``. The tests check what could go wrong when the
same commands run on GPUs: the exit code, exactly that many steps on both processes, finite losses, the two processes
trained on different shards yet hold bit-identical parameters (DDP synchronised them), the parameters moved, the
backbone has the full-size parameter count, the records and claims are written to ``--out`` and nothing to the
committed ``studies/``. The CPU dry runs use ``--dry-run-img-size 64`` (docs/scale.md).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("circle", "square", "triangle")

# job -> (backbone of every phase, number of phases (fits) in the dry run, extra options)
JOBS = {
    "swinv2-study": ("swinv2_tiny_window8_256", 3, []),
    "simmim-study": ("swin_base_patch4_window7_224", 3, []),
    "moby-study": ("swin_tiny_patch4_window7_224", 3, []),
    "cbn-study": ("resnet18", 4, []),
    "dnl-study": ("resnet101", 4, ["--num-classes", "11"]),
    "icar-study": ("swin_tiny_patch4_window7_224", 4, ["--class-texts", "{texts}"]),
    "sparse-study": ("swinv2_tiny_window8_256", 4, ["--sparsities", "0.875"]),
}
# create_model overrides a recipe may set: none of them changes a width or a depth
ARCH_KEYS = {"window_size", "drop_path_rate", "mask_token", "dilate", "bias"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny ImageFolder (3 classes, 4 train / 2 val images each), a segmentation folder and class texts."""
    from PIL import Image

    from workbench.data import shapes

    root = tmp_path_factory.mktemp("scale-data")
    for split, seed, per_class in (("train", 0, 4), ("val", 1, 2)):
        d = shapes.load(n=200, size=48, seed=seed)
        counts = dict.fromkeys(CLASSES, 0)
        for img, lab in zip(d.images, d.labels):
            c = shapes.CLASSES[int(lab)]
            if c in counts and counts[c] < per_class:
                (root / "cls" / split / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / "cls" / split / c / f"{counts[c]}.png")
                counts[c] += 1
        assert set(counts.values()) == {per_class}
        s = shapes.load(n=per_class * 2, size=48, seed=seed + 10, min_objects=2, max_objects=3)
        for sub in ("images", "masks"):
            (root / "seg" / split / sub).mkdir(parents=True, exist_ok=True)
        for i, (img, m) in enumerate(zip(s.images, s.masks)):
            Image.fromarray(img).save(root / "seg" / split / "images" / f"{i}.png")
            Image.fromarray(m.astype(np.uint8)).save(root / "seg" / split / "masks" / f"{i}.png")
    texts = {c: {"name": c, "description": shapes.CLASS_DESCRIPTIONS[c]} for c in CLASSES}
    (root / "texts.json").write_text(json.dumps(texts))
    return root


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


@pytest.mark.slow
@pytest.mark.parametrize("job", list(JOBS))
def test_paper_scale_dry_run_two_gloo_processes(job, data, tmp_path):
    from workbench.models import create_model
    from workbench.studies import discover, scale

    backbone, n_phases, extra = JOBS[job]
    paper = discover()[0][job][2]
    out = tmp_path / "out"
    data_dir = data / ("seg" if job == "dnl-study" else "cls")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "workbench.cli", "train", job, "--scale", "paper", "--dry-run", "--dry-run-img-size", "64",
           "--data-dir", str(data_dir), "--out", str(out), "--no-progress",
           *[e.format(texts=data / "texts.json") for e in extra]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "WORKBENCH_RUNS": str(tmp_path / "runs")}
    committed = _snapshot(ROOT / "studies")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]

    ranks = [json.loads((out / "dry-run" / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [d["rank"] for d in ranks] == [0, 1] and [d["world"] for d in ranks] == [2, 2]
    p0, p1 = ranks[0]["phases"], ranks[1]["phases"]
    assert len(p0) == len(p1) == n_phases
    sizes = {}
    for a, b in zip(p0, p1):
        assert a["tag"] == b["tag"]
        assert a["steps"] == b["steps"] == a["optimizer_steps"] == b["optimizer_steps"] == scale.DRY_STEPS, a["tag"]
        assert len(a["losses"]) == len(b["losses"]) == scale.DRY_STEPS and _finite(a["losses"] + b["losses"]), a["tag"]
        assert a["losses"] != b["losses"], f"{a['tag']}: both processes saw the same batches"
        assert a["params_after"] == b["params_after"], f"{a['tag']}: the processes' parameters differ after the steps"
        assert a["params_after"] != a["params_before"], f"{a['tag']}: the optimizer steps left the parameters unchanged"
        assert a["eval"] and _finite(a["eval"].values()) and a["eval"] == b["eval"], a["tag"]
        assert a["backbone"] == backbone and set(a["backbone_arch"]) <= ARCH_KEYS, (a["tag"], a["backbone_arch"])
        assert a["batch_per_process"] == scale.DRY_BATCH and a["img_size"] == 64
        sizes[json.dumps({**a["backbone_arch"], "img_size": a["img_size"]}, sort_keys=True)] = a["backbone_params"]
    full = sum(p.numel() for p in create_model(backbone, num_classes=0).parameters())
    for arch, n in sizes.items():
        built = create_model(backbone, num_classes=0, **json.loads(arch))
        assert n == sum(p.numel() for p in built.parameters()), arch
        # the paper's width and depth: at 64 px only the V1 bias tables of the (smaller) windows are smaller
        assert abs(n - full) / full < 0.01, (arch, n, full)

    records = [json.loads(line) for line in (out / "records.dry-run.jsonl").read_text().splitlines()]
    assert {r["arm"] for r in records} >= set(scale.SCALES[paper].arms)
    assert all(r["seed"] == 0 and r["config"]["shared"]["dry_run"] for r in records)
    assert all(_finite(v for v in r["metrics"].values() if v is not None) for r in records)
    claims = json.loads((out / "claims.dry-run.json").read_text())
    assert claims["paper"] == paper and claims["claims"]
    assert not (out / "records.jsonl").exists() and not (out / "claims.json").exists()
    assert not (out / "work").exists()
    assert _snapshot(ROOT / "studies") == committed
    if job == "sparse-study":
        for method in ("balanced", "unstructured", "block"):
            assert abs(records[0]["metrics"][f"{method}@0.875:actual_sparsity"] - 0.875) < 0.02


def test_recipes_scale_the_learning_rate_as_the_official_code():
    from workbench.studies.scale import SCALES, SOURCES

    # SimMIM paper: batch 2048 (16 GPUs x 128), pre-training lr 8e-4, fine-tuning 5e-3 (base x 2048 / 512)
    assert SCALES["simmim"].recipes["pretrain"].lr() == pytest.approx(8e-4)
    assert SCALES["simmim"].recipes["finetune"].lr() == pytest.approx(5e-3)
    # Swin: batch 1024 (8 x 128), lr 1e-3; MoBY: batch 512 (8 x 64), lr 1e-3; with 2 processes of 64: a quarter
    assert SCALES["swin_v2"].recipes["train"].lr() == pytest.approx(1e-3)
    assert SCALES["moby"].recipes["pretrain"].lr() == pytest.approx(1e-3)
    assert SCALES["swin_v2"].recipes["train"].lr(2, 64) == pytest.approx(1e-3 * 128 / 1024)
    for sc in SCALES.values():
        for r in sc.recipes.values():
            assert all(v in SOURCES for v in r.sources.values())


@pytest.mark.parametrize("job", list(JOBS))
def test_paper_options_are_refused_at_laptop_scale(job, tmp_path):
    from workbench.studies import discover

    main = discover()[0][job][0]
    with pytest.raises(SystemExit, match="only with --scale paper"):
        main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "out")])


def test_paper_scale_refuses_commit_and_missing_data(tmp_path):
    from workbench.studies import scale

    p = argparse.ArgumentParser()
    from workbench.studies import protocol

    protocol.add_arguments(p, "simmim")
    scale.add_arguments(p)
    with pytest.raises(SystemExit, match="--commit"):
        scale.start(p.parse_args(["--scale", "paper", "--commit", "--data-dir", str(tmp_path)]), [], "simmim")
    with pytest.raises(SystemExit, match="no train/"):
        scale.start(p.parse_args(["--scale", "paper", "--data-dir", str(tmp_path)]), [], "simmim")


def test_docs_show_the_current_recipes():
    """docs/scale.md carries every recipe table as the code defines it (``python -m workbench.studies.scale``)."""
    from workbench.studies.scale import SCALES

    doc = (ROOT / "docs" / "scale.md").read_text()
    for sc in SCALES.values():
        assert f"`{sc.job}`" in doc
        for r in sc.recipes.values():
            assert r.markdown() in doc, f"{sc.paper}/{r.phase}: docs/scale.md is out of date"
