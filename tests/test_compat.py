"""Compatibility: pinned weights of a tiny seeded run, and format-1 checkpoints that must still evaluate and resume."""

import json
import platform
import shutil
from pathlib import Path

import pytest
import torch
from conftest import weights_hash, write_course_npz

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PINS = json.loads((FIXTURES / "pins.json").read_text())


def machine() -> str:
    """The CPU model, its kernel family and the torch build: float results differ between any of them."""
    cpuinfo = Path("/proc/cpuinfo")
    names = (
        [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        if cpuinfo.exists()
        else []
    )
    return f"{names[0] if names else platform.processor()} | {torch.backends.cpu.get_cpu_capability()} | torch {torch.__version__}"


HERE = PINS["machines"].get(machine())
# The hashes pin bits, so they hold on the machine they were recorded on: tests/fixtures/record_pins.py adds one.
same_kernels = pytest.mark.skipif(HERE is None, reason=f"no pinned hashes for {machine()}: run tests/fixtures/record_pins.py")


@same_kernels
def test_a_tiny_seeded_run_gives_the_pinned_weights(cli, tmp_path):
    write_course_npz(tmp_path / "tiny")
    code, _, err = cli("train", "--data_dir=tiny", "--out=same", "--epochs=2", "--batch_size=32", "--precision=fp32")
    assert code == 0, err
    last = torch.load(tmp_path / "same" / "last.pt", weights_only=True)
    assert weights_hash(last["state_dict"]) == HERE["default_run"]["ema"]
    assert weights_hash(last["resume"]["model"]) == HERE["default_run"]["model"]


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
    assert weights_hash(last["state_dict"]) == HERE["v1_resumed"]["ema"]
    assert weights_hash(last["resume"]["model"]) == HERE["v1_resumed"]["model"]
