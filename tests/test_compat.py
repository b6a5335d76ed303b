"""Compatibility: pinned weights of a tiny seeded run, and runs saved by the code before that must still resume and evaluate."""

import json
import platform
from pathlib import Path

import pytest
import torch
from conftest import ft, weights_hash, write_course_npz

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


PIN_THREADS = 2  # reductions split by thread, so the bits depend on the count too: pinned with the CI machine's


@pytest.fixture
def pin_threads():
    """Torch's thread count as the pins were recorded with, whatever the machine or the test worker has."""
    before = torch.get_num_threads()
    torch.set_num_threads(PIN_THREADS)
    yield
    torch.set_num_threads(before)


@same_kernels
def test_a_tiny_seeded_run_gives_the_pinned_weights(cli, tmp_path, pin_threads):
    write_course_npz(tmp_path / "tiny")
    code, _, err = cli("train", "--data_dir=tiny", "--out=same", "--epochs=2", "--batch_size=32", "--precision=fp32", "--device=cpu")
    assert code == 0, err
    last = torch.load(tmp_path / "same" / "last.pt", weights_only=True)
    assert weights_hash(last["state_dict"]) == HERE["default_run"]["ema"]
    assert weights_hash(last["resume"]["model"]) == HERE["default_run"]["model"]


def _as_written_before_the_recipe_dataclass(path: Path) -> None:
    """Rewrite a checkpoint in the layout the code wrote until 2026-12-01 (users have such last.pt files, and the notebook
    now updates the code under an unfinished run): the recipe's `upright` was named "absolute", the model config carried
    "arch", and a "normalization" copy of its mean and std sat beside it."""
    raw = torch.load(path, weights_only=True)
    recipe = raw["train_config"]["augmentation"]
    recipe["absolute"] = recipe.pop("upright")
    del recipe["upright_limit"]
    raw["train_config"]["model"] = {  # the code before 2026-12-04 also kept the network's layers in the settings
        k: raw["model_config"][k] for k in ("stages", "rotations", "init_scale", "tta_degrees", "hidden", "dropout")
    }
    raw["model_config"]["arch"] = "cnn"
    raw["normalization"] = {"mean": raw["model_config"]["mean"], "std": raw["model_config"]["std"]}
    torch.save(raw, path)


def test_a_run_saved_by_the_code_before_still_resumes_and_evaluates(cli, tmp_path, monkeypatch):
    write_course_npz(tmp_path / "tiny")
    real = ft.save_epoch

    def save_then_stop(state, *args):
        real(state, *args)
        if state.epoch == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(ft, "save_epoch", save_then_stop)
        code, _, err = cli("train", "--data_dir=tiny", "--out=old", "--epochs=3", "--batch_size=32")
        assert code == 130, err
    for name in ("best.pt", "last.pt"):
        _as_written_before_the_recipe_dataclass(tmp_path / "old" / name)
    assert ft.Checkpoint.load(tmp_path / "old" / "last.pt").train_config.augmentation.upright  # "absolute" read as upright
    code, _, err = cli("train", "--resume=old/last.pt")
    assert code == 0, err
    assert torch.load(tmp_path / "old" / "last.pt", weights_only=True)["metrics"]["epoch"] == 3
    code, out, err = cli("evaluate", "old/best.pt", "--data_dir=tiny")
    assert code == 0 and out.startswith("Test accuracy:"), err
