"""Shared helpers: tiny synthetic data made by the tests, the CLI run in-process, and the real data's location."""

import functools
import hashlib
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# pytest-xdist (pyproject's addopts) runs the suite in several workers: each, and every process it starts, gets its
# share of the cores, because torch threads on more cores than there are spin and slow the whole suite several times.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))

import fashion_trainer as ft  # noqa: E402

# The real data (../shared/data beside the checkout, or wherever FASHION_TRAINER_SHARED_DATA points).
SHARED_DATA = Path(os.environ.get("FASHION_TRAINER_SHARED_DATA", ROOT.parent / "shared" / "data"))


def digit_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Easy, learnable uint8 images [N, 28, 28]: a bright bar whose position encodes the label, plus noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(len(labels), 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
    return images


def write_course_npz(folder: Path, n_train: int = 200, n_test: int = 50, shards: int = 2, seed: int = 0) -> Path:
    """A tiny corrupted-MNIST folder in the npz layout."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = n_train // shards
    for i in range(shards):
        labels = rng.integers(0, 10, per)
        np.savez(folder / f"train_{i}.npz", images=digit_images(labels, seed + i), labels=labels)
    labels = rng.integers(0, 10, n_test)
    np.savez(folder / "test.npz", images=digit_images(labels, seed + 99), labels=labels)
    return folder


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A tiny npz-layout data folder."""
    return write_course_npz(tmp_path / "tiny")


@pytest.fixture
def cli(monkeypatch, tmp_path, capsys):
    """Run the CLI in-process inside tmp_path; returns (exit status, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.delenv("FASHION_TRAINER_DEBUG", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = ft.main([str(a) for a in args])
        except SystemExit as exc:  # fire's own usage errors exit this way
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


# What commands report on stderr before an error can stop them; any other line (a traceback, a second error, a stray
# warning) fails assert_one_line_error.
REPORTS = (
    "training on ",
    "continuing the unfinished run",
    "resuming ",
    "note: ",
    "warning: ",
    "epoch ",
    "--budget=",
    "start: ",
    "early stop",
    "test-time augmentation:",
    "  ",
    "confusion matrix:",
    "download ",
    "write shards",
    "lr_find",
)


def assert_one_line_error(code: int, err: str, *fragments: str, exit_code: int = 1) -> None:
    """A user error: the given exit status, stderr ending in one `error:` line that names the fragments, every line
    before it one of the command's own reports (a progress bar redrawn with \\r counts as one), no traceback."""
    assert code == exit_code, err
    *before, last = [line for line in re.split(r"[\r\n]", err) if line.strip()] or [""]
    assert last.startswith("error: ") and err.rstrip(" \r").endswith(last + "\n"), err
    assert all(line.startswith(REPORTS) for line in before), err
    for fragment in fragments:
        assert fragment in last, last


def needs_shared(name: str):
    """Mark a test that reads SHARED_DATA/<name>: skipped where it is absent, but failed under CI (CI=true), where a
    missing folder means the tests on real data silently stopped running."""

    def mark(test):
        if (SHARED_DATA / name).is_dir():
            return test
        if os.environ.get("CI") == "true":

            @functools.wraps(test)
            def missing(*args, **kwargs):
                pytest.fail(f"{SHARED_DATA / name} is missing under CI; the real-data tests need it (set FASHION_TRAINER_SHARED_DATA)")

            return missing
        return pytest.mark.skip(reason=f"{SHARED_DATA / name} is absent (set FASHION_TRAINER_SHARED_DATA)")(test)

    return mark


needs_shared_mnist = needs_shared("mnist")


def weights_hash(state: dict) -> str:
    """SHA-256 over a state dict's names and raw tensor bytes: equal only for bit-identical weights."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def ctrl_c_at_step(monkeypatch, step: int):
    """Make training stop as Ctrl-C would at its step-th step; returns the real update_ema, to put back for resuming."""
    real, calls = ft.update_ema, {"n": 0}

    def stop(*a, **k):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        real(*a, **k)

    monkeypatch.setattr(ft, "update_ema", stop)
    return real


@pytest.fixture
def figures(monkeypatch):
    """Capture every figure the commands save, still open, to check what it shows."""
    saved, real = [], ft.save_figure

    def capture(fig, path, **kwargs):
        saved.append(fig)
        fig.canvas.draw()
        return real(fig, path, **kwargs)

    monkeypatch.setattr(ft, "save_figure", capture)
    return saved
