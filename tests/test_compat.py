"""Compatibility: pinned weights of a tiny seeded run, and runs saved by the code before that must still resume and evaluate."""

import json
import platform
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, weights_hash, write_course_npz

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
    assert weights_hash(last["training_state"]["model"]) == HERE["default_run"]["model"]


@pytest.mark.parametrize(("version", "words"), [(1, "earlier development version"), (3, "newer fashion_trainer")])
def test_files_of_another_format_version_are_refused_in_one_line_never_translated(cli, tmp_path, version, words):
    write_course_npz(tmp_path / "tiny")
    code, _, err = cli("train", "--data_dir=tiny", "--out=old", "--epochs=1", "--batch_size=32")
    assert code == 0, err
    for name in ("best.pt", "last.pt"):
        raw = torch.load(tmp_path / "old" / name, weights_only=True)
        torch.save(raw | {"format_version": version}, tmp_path / "old" / name)
    history = json.loads((tmp_path / "old" / "history.json").read_text())
    (tmp_path / "old" / "history.json").write_text(json.dumps(history | {"format_version": version}))
    assert_one_line_error(*cli("evaluate", "old/best.pt", "--data_dir=tiny")[::2], "old/best.pt", words)
    assert_one_line_error(*cli("train", "--resume=old")[::2], "old/last.pt", words)
    assert_one_line_error(*cli("train", "--data_dir=tiny", "--out=old", "--epochs=1", "--batch_size=32")[::2], words)
    code, _, err = cli("compare", "old")
    assert_one_line_error(code, err, "no run to compare")
    assert f"note: old: made by {'an' if version == 1 else 'a'} {words}" in err
