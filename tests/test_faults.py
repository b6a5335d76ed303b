"""Faults of the machine: a full disk, a read-only, vanished or impossible folder, a Drive mount that drops. Each ends in
one line naming the folder and the cause, leaves nothing half-written, and the same command continues afterwards.

The faults are stand-ins (no root, no real full disk): `open` inside fashion_trainer.py hands out files whose writes
fail from the n-th one on, or a folder probe raises the error a read-only or vanished mount raises."""

import builtins
import errno
import json
import shutil

import pytest
import torch
from conftest import assert_one_line_error, ctrl_c_at_step, ft, weights_hash

ARGS = ("--epochs=3", "--batch_size=32", "--device=cpu")  # runs compared bit for bit: on the CPU


class FailingWrites:
    """`open` for fashion_trainer.py whose files raise OSError(code) on every write from the n-th on (counted across files)."""

    def __init__(self, code: int, nth: int):
        self.code, self.nth, self.writes = code, nth, 0

    def __call__(self, file, mode="r", *args, **kwargs):
        handle = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 (closed by whoever opened it)
        return _FailingFile(handle, self) if "w" in mode else handle


class _FailingFile:
    """A file whose write() counts and fails as FailingWrites says; everything else is the real file's."""

    def __init__(self, handle, faults: FailingWrites):
        self.handle, self.faults = handle, faults

    def write(self, data):
        self.faults.writes += 1
        if self.faults.writes >= self.faults.nth:
            raise OSError(self.faults.code, "stand-in fault")
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def _writes_per_epoch(cli, tiny_data, monkeypatch) -> int:
    """How many file writes one epoch of this run makes (last.pt, last.prev.pt, best.pt, history.json, the curve)."""
    counter = FailingWrites(errno.ENOSPC, 10**9)
    with monkeypatch.context() as patch:
        patch.setattr(ft, "open", counter, raising=False)
        assert cli("train", f"--data_dir={tiny_data}", "--out=count", "--epochs=1", "--batch_size=32")[0] == 0
    return counter.writes


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.EACCES, "no permission to write there"),
        (errno.EDQUOT, "the disk quota is used up"),
        (errno.EIO, "input/output error"),
        (errno.ENOTCONN, "the mount went away"),
        (errno.ESTALE, "the mount went away"),
        (errno.EROFS, "read-only"),
    ],
)
def test_each_fault_is_said_in_plain_words_and_leaves_nothing(tmp_path, monkeypatch, code, words):
    monkeypatch.setattr(ft, "open", FailingWrites(code, 1), raising=False)
    (tmp_path / "out").mkdir()
    with pytest.raises(ft.WriteFailed) as failed:
        ft.write_atomic(b"x", tmp_path / "out" / "file")
    assert str(failed.value).startswith(f"could not write to {tmp_path / 'out'}: ") and words in str(failed.value)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(("code", "words"), [(errno.ENOSPC, "no space left on the disk"), (errno.ENOTCONN, "the mount went away")])
def test_a_write_that_fails_mid_run_is_one_line_and_the_same_command_continues(cli, tiny_data, tmp_path, monkeypatch, code, words):
    assert cli("train", f"--data_dir={tiny_data}", "--out=whole", *ARGS)[0] == 0
    per_epoch = _writes_per_epoch(cli, tiny_data, monkeypatch)
    with monkeypatch.context() as patch:
        patch.setattr(ft, "open", FailingWrites(code, per_epoch + 1), raising=False)  # the first write of epoch 2
        result = cli("train", f"--data_dir={tiny_data}", "--out=run", *ARGS)
    assert_one_line_error(*result[::2], "could not write to run", words, "run/last.pt still holds epoch 1", "same command")
    run = tmp_path / "run"
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # nothing half-written stays behind
    assert torch.load(run / "last.pt", weights_only=True)["training_state"]["epoch"] == 1  # the last complete checkpoint, intact
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", *ARGS)  # the space came back
    assert code == 0, err
    assert "continuing the unfinished run in run after epoch 1 of 3" in err
    assert [e["epoch"] for e in json.loads((run / "history.json").read_text())["epochs"]] == [1, 2, 3]
    a, b = (torch.load(tmp_path / n / "last.pt", weights_only=True)["state_dict"] for n in ("whole", "run"))
    assert weights_hash(a) == weights_hash(b)


def test_a_file_written_into_a_folder_that_is_gone_fails_and_makes_no_folder(tmp_path):
    (tmp_path / "drive").mkdir()  # a dropped mount's empty mount point
    with pytest.raises(ft.WriteFailed, match="the folder is gone"):
        ft.write_atomic(b"x", tmp_path / "drive" / "MyDrive" / "run" / "history.json")
    assert not list((tmp_path / "drive").iterdir())


@pytest.mark.parametrize("drop", ["gone", "recreated"])
def test_a_drive_mount_that_drops_mid_run_is_one_line_recreates_nothing_and_the_run_continues_once_back(
    cli, tiny_data, tmp_path, monkeypatch, drop
):
    """Colab leaves /content/drive an empty folder when Drive drops: the run must not go on on the runtime's disk."""
    mount, away = tmp_path / "drive", tmp_path / "drive-while-dropped"
    args = ("train", f"--data_dir={tiny_data}", "--out=drive/MyDrive/run", *ARGS)
    real, saves = ft.RunFolder.save_epoch, []

    def drop_after_epoch_1(*a, **k):
        real(*a, **k)
        saves.append(1)
        if len(saves) == 1:
            mount.rename(away)  # the mount's content is gone
            mount.mkdir()  # and its mount point is left, empty
            if drop == "recreated":  # something made the same path again, on another disk
                (mount / "MyDrive" / "run").mkdir(parents=True)

    monkeypatch.setattr(ft.RunFolder, "save_epoch", drop_after_epoch_1)
    code, _, err = cli(*args)
    assert_one_line_error(code, err, "drive/MyDrive/run is gone or is another folder now", "Google Drive", "same command again")
    left = sorted(str(p.relative_to(mount)) for p in mount.rglob("*"))
    assert left == ([] if drop == "gone" else ["MyDrive", "MyDrive/run"])  # nothing written, no folder made
    monkeypatch.setattr(ft.RunFolder, "save_epoch", real)
    shutil.rmtree(mount)
    away.rename(mount)  # Drive is back
    code, _, err = cli(*args)
    assert code == 0, err
    assert "continuing the unfinished run in drive/MyDrive/run after epoch 1 of 3" in err
    assert [e["epoch"] for e in json.loads((mount / "MyDrive" / "run" / "history.json").read_text())["epochs"]] == [1, 2, 3]


@pytest.mark.parametrize("nth", [1, 2, 4])  # last.pt, best.pt, the curve of epoch 1
def test_a_full_disk_at_any_write_of_the_first_epochs_leaves_a_run_the_same_command_finishes(cli, tiny_data, tmp_path, monkeypatch, nth):
    with monkeypatch.context() as patch:
        patch.setattr(ft, "open", FailingWrites(errno.ENOSPC, nth), raising=False)
        code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", *ARGS)
    assert_one_line_error(code, err, "could not write to run", "no space left")
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", *ARGS)
    assert code == 0, err
    assert [e["epoch"] for e in json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]] == [1, 2, 3]
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert best["metrics"]["epoch"] == last["training_state"]["best_epoch"]  # best.pt holds the epoch the run calls best


def _unwritable(monkeypatch, code: int) -> None:
    """Every folder probe fails as on a read-only file system, or where a permission is missing."""

    def refuse(*args, **kwargs):
        raise OSError(code, "stand-in fault")

    monkeypatch.setattr(ft.tempfile, "TemporaryFile", refuse)


@pytest.mark.parametrize(("code", "words"), [(errno.EROFS, "read-only"), (errno.EACCES, "no permission")])
def test_an_unwritable_out_is_found_before_any_data_is_read(cli, monkeypatch, code, words):
    _unwritable(monkeypatch, code)
    result = cli("train", "--data_dir=no/such/data", "--out=run", "--epochs=1")  # the data error would come second
    assert_one_line_error(*result[::2], "could not write to run", words)
    result = cli("prepare", "--source=no/such/mnist", "--out=built")
    assert_one_line_error(*result[::2], "could not write to", words)


def test_a_continued_run_is_checked_before_any_data_is_read(cli, tiny_data, monkeypatch):
    args = ("train", f"--data_dir={tiny_data}", "--out=run", *ARGS)
    real = ctrl_c_at_step(monkeypatch, 8)  # in epoch 2: last.pt holds epoch 1
    assert cli(*args)[0] == 130
    monkeypatch.setattr(ft, "update_ema", real)
    monkeypatch.setattr(ft, "load_data", lambda *a, **k: pytest.fail("the data was read before the run folder was tried"))
    _unwritable(monkeypatch, errno.EROFS)  # the mount turned read-only
    for command in (args, ("train", "--resume=run")):
        assert_one_line_error(*cli(*command)[::2], "could not write to run", "read-only")


def test_an_out_whose_parent_is_a_file_is_one_line(cli, tiny_data, tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=notes.txt/run", "--epochs=1")
    assert_one_line_error(code, err, "could not write to notes.txt/run", "a file stands where a folder is needed")


def test_plots_that_cannot_be_written_are_one_line_and_said_before_reading_data(cli, tiny_data, tmp_path, monkeypatch):
    assert cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=1", "--batch_size=32")[0] == 0
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    for command in (
        ("evaluate", "run/best.pt", "--data_dir=no/such/data", "--plot=notes.txt/confusion.png"),
        ("show", "--data_dir=no/such/data", "--out=notes.txt/grid.png"),
        ("mc_dropout", "run/best.pt", "--data_dir=no/such/data", "--out=notes.txt/mc.png"),
    ):
        assert_one_line_error(*cli(*command)[::2], "could not write to notes.txt", "a file stands where a folder is needed")
    monkeypatch.setattr(ft, "open", FailingWrites(errno.ENOSPC, 1), raising=False)  # the folder is fine, the disk fills up
    code, out, err = cli("evaluate", "run/best.pt", f"--data_dir={tiny_data}", "--plot=plots/confusion.png")
    assert_one_line_error(code, err, "could not write to plots", "no space left")
    assert out.startswith("Test accuracy:")  # the result was printed before the plot failed
    assert not list((tmp_path / "plots").iterdir())


def test_prepare_leaves_no_half_built_folder_when_the_disk_fills(cli, tmp_path, monkeypatch):
    from conftest import digit_images

    src = tmp_path / "mnist"
    src.mkdir()
    import gzip
    import struct

    import numpy as np

    rng = np.random.default_rng(0)
    for split, n in (("train", 6000), ("t10k", 200)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = digit_images(labels)
        with gzip.open(src / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(src / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())
    args = ("prepare", f"--source={src}", "--out=built", "--train_shards=2", "--shard_size=100", "--test_size=50")
    with monkeypatch.context() as patch:
        patch.setattr(ft, "open", FailingWrites(errno.ENOSPC, 2), raising=False)
        assert_one_line_error(*cli(*args)[::2], "could not write to", "no space left")
    assert not (tmp_path / "built").exists() and [p.name for p in tmp_path.iterdir()] == ["mnist"]
    code, _, err = cli(*args)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "built").iterdir()) == ["prepare.json", "test.npz", "train_0.npz", "train_1.npz"]


def test_an_unexpected_exception_is_one_line_naming_debug(cli, tiny_data, monkeypatch):
    def broken(*args, **kwargs):
        raise AttributeError("module 'hashlib' has no attribute 'file_digest'")

    monkeypatch.setattr(ft, "fingerprint", broken)
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=1")
    assert_one_line_error(code, err, "unexpected AttributeError", "file_digest", "--debug")
