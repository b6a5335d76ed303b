"""Compatibility: pinned weights of a tiny seeded run, and format-1 checkpoints that must still evaluate and resume."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import weights_hash, write_course_npz

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PINS = json.loads((FIXTURES / "pins.json").read_text())
# Float results differ between CPU kernel families (AVX2 vs AVX512) and torch builds: the hashes pin one of each.
same_kernels = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() != PINS["cpu_capability"] or torch.__version__ != PINS["torch"],
    reason=f"the pinned hashes were recorded with {PINS['cpu_capability']} kernels and torch {PINS['torch']}",
)


@same_kernels
def test_a_tiny_seeded_run_gives_the_pinned_weights(cli, tmp_path):
    write_course_npz(tmp_path / "tiny")
    code, _, err = cli("train", "--data_dir=tiny", "--out=same", "--epochs=2", "--batch_size=32", "--precision=fp32")
    assert code == 0, err
    last = torch.load(tmp_path / "same" / "last.pt", weights_only=True)
    assert weights_hash(last["state_dict"]) == PINS["default_run"]["ema"]
    assert weights_hash(last["resume"]["model"]) == PINS["default_run"]["model"]


def _old_run(tmp_path: Path) -> Path:
    """The tiny data the fixtures were trained on, and the format-1 run folder, interrupted after epoch 2 of 3."""
    write_course_npz(tmp_path / "tiny")
    (tmp_path / "old").mkdir()
    for name in ("best.pt", "last.pt"):
        shutil.copy(FIXTURES / f"v1_{name}", tmp_path / "old" / name)
    return tmp_path / "old"


def test_a_format_1_best_pt_still_evaluates(cli, tmp_path):
    _old_run(tmp_path)
    code, out, err = cli("evaluate", "old/best.pt", "--data_dir=tiny", "--tta=False")
    assert code == 0, err
    assert out.strip().endswith(f"({round(PINS['v1_best_test_accuracy'] * 50)}/50)")


@same_kernels
def test_a_format_1_last_pt_resumes_to_the_pinned_weights(cli, tmp_path):
    _old_run(tmp_path)
    code, _, err = cli("train", "--resume=old/last.pt")
    assert code == 0, err
    last = torch.load(tmp_path / "old" / "last.pt", weights_only=True)
    assert last["metrics"]["epoch"] == 3
    assert weights_hash(last["state_dict"]) == PINS["v1_resumed"]["ema"]
    assert weights_hash(last["resume"]["model"]) == PINS["v1_resumed"]["model"]
