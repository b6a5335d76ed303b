"""Data: the course layouts, every validation failure, the IDX reader, prepare and its download path."""

import dataclasses
import gzip
import hashlib
import http.server
import json
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, digit_images, ft, write_course_npz


def test_npz_layout_reads_whole_dataset_with_numeric_shard_order(tmp_path):
    folder = write_course_npz(tmp_path / "d", n_train=120, n_test=30, shards=12)
    data = ft.read_corrupted_mnist(folder)
    assert data.train_images.shape == (120, 1, 28, 28) and data.train_images.dtype == torch.float32
    assert data.test_images.shape == (30, 1, 28, 28)
    assert data.train_images.min() >= 0 and data.train_images.max() <= 1
    # train_10 and train_11 come after train_9, as numbers sort, not as strings do
    expected = np.concatenate([np.load(folder / f"train_{i}.npz")["labels"] for i in range(12)])
    assert data.train_labels.tolist() == expected.tolist()


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x,  # uint8 [N, 28, 28]
        lambda x: x.reshape(len(x), 784),  # flat
        lambda x: x[:, None],  # [N, 1, 28, 28]
        lambda x: x.astype(np.float32) / 255,  # float in [0, 1]
    ],
)
def test_accepted_image_shapes_and_dtypes_give_the_same_pixels(tmp_path, make):
    labels = np.arange(10, dtype=np.int16)  # any integer dtype
    images = digit_images(labels)
    for name in ("train_0.npz", "test.npz"):
        np.savez(tmp_path / name, images=make(images), labels=labels)
    data = ft.read_corrupted_mnist(tmp_path)
    assert torch.allclose(data.train_images[:, 0], torch.from_numpy(images).float() / 255)
    assert data.train_labels.dtype == torch.int64


def test_pt_layout(tmp_path):
    labels = torch.arange(20) % 10
    images = torch.from_numpy(digit_images(labels.numpy())).float() / 255
    for i in range(2):
        torch.save(images[i * 10 : (i + 1) * 10], tmp_path / f"train_images_{i}.pt")
        torch.save(labels[i * 10 : (i + 1) * 10], tmp_path / f"train_target_{i}.pt")
    torch.save(images[:5], tmp_path / "test_images.pt")
    torch.save(labels[:5], tmp_path / "test_target.pt")
    data = ft.read_corrupted_mnist(tmp_path)
    assert data.train_images.shape == (20, 1, 28, 28) and data.test_labels.tolist() == [0, 1, 2, 3, 4]


def _break(folder: Path, case: str) -> tuple[str, ...]:
    """Damage a valid tiny data folder in one way; returns fragments the error line must contain."""
    labels = np.arange(10)
    good = digit_images(labels)
    if case == "no shards":
        for p in folder.glob("train_*.npz"):
            p.unlink()
        return ("no corrupted-MNIST files", "holds test.npz", "--data_dir", "prepare")
    if case == "no test file":
        (folder / "test.npz").unlink()
        return ("test.npz is missing",)
    if case == "mixed layouts":
        torch.save(torch.zeros(2, 28, 28), folder / "train_images_0.pt")
        return ("mixes",)
    if case == "missing key":
        np.savez(folder / "train_0.npz", pictures=good, labels=labels)
        return ("train_0.npz", "'images'")
    if case == "garbled file":
        (folder / "train_1.npz").write_bytes(b"PK\x03\x04 this is not really a zip archive")
        return ("train_1.npz", "not a readable .npz")
    if case == "count mismatch":
        np.savez(folder / "train_0.npz", images=good, labels=labels[:7])
        return ("train_0.npz", "10 images but 7 labels")
    if case == "wrong image size":
        np.savez(folder / "train_0.npz", images=np.zeros((10, 32, 32), np.uint8), labels=labels)
        return ("train_0.npz", "[10, 32, 32]")
    if case == "nan pixels":
        bad = good.astype(np.float32) / 255
        bad[3, 5, 5] = np.nan
        np.savez(folder / "test.npz", images=bad, labels=labels)
        return ("test.npz", "NaN")
    if case == "inf pixels":
        bad = good.astype(np.float32)
        bad[0, 0, 0] = np.inf
        np.savez(folder / "train_0.npz", images=bad, labels=labels)
        return ("train_0.npz", "infinite")
    if case == "labels out of range":
        np.savez(folder / "train_0.npz", images=good, labels=labels + 1)
        return ("train_0.npz", "outside 0..9")
    if case == "float labels":
        np.savez(folder / "train_0.npz", images=good, labels=labels.astype(np.float32))
        return ("train_0.npz", "integer")
    if case == "pickled object array":
        np.save(folder / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        (folder / "x.npy").rename(folder / "train_0.npz")
        return ("train_0.npz", "not a readable .npz")
    raise AssertionError(case)


CASES = [
    "no shards",
    "no test file",
    "mixed layouts",
    "missing key",
    "garbled file",
    "count mismatch",
    "wrong image size",
    "nan pixels",
    "inf pixels",
    "labels out of range",
    "float labels",
    "pickled object array",
]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint trained for one epoch on tiny data."""
    root = tmp_path_factory.mktemp("ckpt")
    ft.main(["train", f"--data_dir={write_course_npz(root / 'd', n_train=40, n_test=10)}", f"--out={root / 'run'}", "--epochs=1"])
    return root / "run" / "best.pt"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_broken_data_gives_one_line_and_exit_1(cli, tmp_path, tiny_checkpoint, case, command):
    folder = write_course_npz(tmp_path / "d", n_train=20, n_test=10)
    fragments = _break(folder, case)
    if command == "train":
        code, _, err = cli("train", f"--data_dir={folder}", "--epochs=1", f"--out={tmp_path / 'run'}")
        assert not (tmp_path / "run").exists()  # nothing half-written
    else:
        code, out, err = cli("evaluate", str(tiny_checkpoint), f"--data_dir={folder}")
        if "train_" in fragments[0]:  # evaluate reads the test split alone: damage to training shards does not stop it
            assert code == 0 and out.startswith("Test accuracy:"), err
            return
    assert_one_line_error(code, err, *fragments)


def test_pt_shard_holding_a_pickled_object_is_refused_without_running_it(cli, tmp_path):
    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    folder = tmp_path / "d"
    folder.mkdir()
    torch.save(Boom(), folder / "train_images_0.pt")
    torch.save(torch.zeros(1, dtype=torch.long), folder / "train_target_0.pt")
    torch.save(torch.zeros(1, 28, 28), folder / "test_images.pt")
    torch.save(torch.zeros(1, dtype=torch.long), folder / "test_target.pt")
    code, _, err = cli("train", f"--data_dir={folder}")
    assert_one_line_error(code, err, "train_images_0.pt", "refused")
    assert not (tmp_path / "pwned").exists()


def test_empty_folder_says_how_to_get_data(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = cli("train", f"--data_dir={tmp_path / 'empty'}")
    assert_one_line_error(code, err, "is empty", "prepare --out=")


def test_pt_layout_missing_target_file(cli, tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    torch.save(torch.zeros(3, 28, 28), folder / "train_images_0.pt")
    code, _, err = cli("train", f"--data_dir={folder}")
    assert_one_line_error(code, err, "train_target_0.pt")


def test_explicit_missing_data_dir_is_an_error_not_a_fallback(cli, tmp_path):
    code, _, err = cli("train", f"--data_dir={tmp_path / 'nope'}")
    assert_one_line_error(code, err, "nope", "not a folder", "prepare")


def test_raw_mnist_folder_points_to_prepare(cli, tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    code, _, err = cli("train", f"--data_dir={tmp_path / 'raw'}")
    assert_one_line_error(code, err, "raw MNIST", "prepare --source=")


def test_default_folder_falls_back_to_bundled_sample_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = ft.resolve_data_dir(None)
    assert path == ft.SAMPLE_DATA_DIR
    assert "bundled" in capsys.readouterr().err
    data = ft.read_corrupted_mnist(path)
    assert data.train_images.shape == (4000, 1, 28, 28) and data.test_images.shape == (1000, 1, 28, 28)
    assert np.bincount(data.train_labels.numpy()).tolist() == [400] * 10


# ----------------------------------------------------------------------------- the course's layouts and folders


def _course_pt(folder: Path, shards: int = 6, per: int = 20, test: int = 10, normalise: bool = False) -> Path:
    """A tiny copy of the course's corruptmnist_v1 (.pt shards of float images) or, with shards=0, data/processed."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = torch.arange(max(shards, 1) * per + test) % 10
    images = torch.from_numpy(digit_images(labels.numpy())).float() / 255
    if normalise:  # what the course's data exercise writes: mean 0, std 1
        images = (images - images.mean()) / images.std()
    if shards:
        for i in range(shards):
            torch.save(images[i * per : (i + 1) * per].clone(), folder / f"train_images_{i}.pt")
            torch.save(labels[i * per : (i + 1) * per].clone(), folder / f"train_target_{i}.pt")
    else:
        torch.save(images[:per].clone(), folder / "train_images.pt")
        torch.save(labels[:per].clone(), folder / "train_target.pt")
    torch.save(images[-test:].clone(), folder / "test_images.pt")
    torch.save(labels[-test:].clone(), folder / "test_target.pt")
    return folder


def test_single_file_layout_of_the_data_exercise_is_read_and_unstandardised(tmp_path):
    folder = _course_pt(tmp_path / "processed", shards=0, per=30, normalise=True)
    data = ft.read_corrupted_mnist(folder)
    assert data.train_images.shape == (30, 1, 28, 28) and data.test_images.shape == (10, 1, 28, 28)
    assert float(data.train_images.min()) == 0.0 and abs(float(data.train_images.max()) - 1) < 1e-6
    raw = torch.from_numpy(digit_images((torch.arange(40) % 10).numpy())).float() / 255
    assert torch.allclose(data.train_images[:, 0], raw[:30], atol=1e-5)


@pytest.mark.parametrize(
    ("folder", "layout"),
    [
        ("data/corruptmnist", "npz layout"),
        ("data/corruptmnist_v1", ".pt layout, 6 train shards"),
        ("data/raw/corruptmnist_v2", ".pt layout, 6 train shards"),
        ("data/raw", ".pt layout, 6 train shards"),
        ("data/processed", ".pt layout, one train file"),
    ],
)
def test_course_folders_are_found_and_named_on_stderr(tmp_path, monkeypatch, capsys, folder, layout):
    monkeypatch.chdir(tmp_path)
    if layout == "npz layout":
        write_course_npz(tmp_path / folder)
    else:
        _course_pt(tmp_path / folder, shards=0 if "one train file" in layout else 6)
    assert ft.resolve_data_dir(None) == Path(folder)
    assert f"data: {folder} ({layout}" in capsys.readouterr().err


def test_search_order_prefers_our_folder_then_the_course_names_then_raw_then_processed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _course_pt(tmp_path / "data" / "processed", shards=0)
    (tmp_path / "data" / "raw").mkdir()
    (tmp_path / "data" / "raw" / "notes.txt").write_text("the raw files are elsewhere")  # no layout: passed over
    assert ft.resolve_data_dir(None) == Path("data/processed")
    _course_pt(tmp_path / "data" / "raw" / "corruptmnist_v1")
    assert ft.resolve_data_dir(None) == Path("data/raw/corruptmnist_v1")
    write_course_npz(tmp_path / "data" / "corruptedmnist")
    assert ft.resolve_data_dir(None) == Path("data/corruptedmnist")


def test_folders_without_any_layout_are_an_error_naming_what_was_found(cli, tmp_path):
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "corruptmnist.zip").write_bytes(b"PK")
    code, _, err = cli("train", "--epochs=1")
    assert_one_line_error(code, err, "data/raw holds corruptmnist.zip", "--data_dir", "prepare")


def test_train_reads_the_course_v1_layout(cli, tmp_path):
    _course_pt(tmp_path / "data" / "corruptmnist_v1")
    code, _, err = cli("train", "--epochs=1", "--batch_size=32", "--out=run")
    assert code == 0, err
    assert "data: data/corruptmnist_v1 (.pt layout, 6 train shards)" in err and "training on 120 corruptedmnist images" in err


# ----------------------------------------------------------------------------- IDX and prepare


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    payload = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_mnist_folder(folder: Path, n_train: int = 5020, n_test: int = 20) -> Path:
    """Four small IDX files named as the official MNIST ones (5,020 train digits: 20 beyond those of the bundled sample)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", digit_images(labels))
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


def test_read_idx_gzip_and_raw(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert (ft.read_idx(write_idx(tmp_path / "a-idx3-ubyte.gz", array)) == array).all()
    assert (ft.read_idx(write_idx(tmp_path / "a-idx3-ubyte", array)) == array).all()


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)
    with pytest.raises(ft.UserError, match="magic"):
        ft.read_idx(bad)
    short = write_idx(tmp_path / "short", np.zeros((4, 28, 28), np.uint8))
    short.write_bytes(short.read_bytes()[:-10])
    with pytest.raises(ft.UserError, match="truncated"):
        ft.read_idx(short)


def test_prepare_from_source_writes_course_layout_reproducibly(cli, tmp_path):
    src = write_mnist_folder(tmp_path / "mnist")
    code, _out, err = cli("prepare", f"--source={src}", "--out=a", "--train_shards=2", "--shard_size=10", "--test_size=20", "--degrees=30")
    assert code == 0, err
    data = ft.read_corrupted_mnist(tmp_path / "a")
    assert data.train_images.shape == (20, 1, 28, 28) and data.test_images.shape == (20, 1, 28, 28)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["prepare.json", "test.npz", "train_0.npz", "train_1.npz"]
    original = ft.read_idx(src / "t10k-images-idx3-ubyte.gz")
    assert not np.array_equal(np.load(tmp_path / "a" / "test.npz")["images"], original)  # rotated
    cli("prepare", f"--source={src}", "--out=b", "--train_shards=2", "--shard_size=10", "--test_size=20", "--degrees=30")
    for name in ("train_0.npz", "test.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    code, _, err = cli("prepare", f"--source={src}", "--out=a")
    assert_one_line_error(code, err, "already holds data", "--force", exit_code=2)
    assert not list(tmp_path.glob("*.tmp"))


def _indexed_mnist(folder: Path, n_train: int = 5100, n_test: int = 30, same_picture: bool = False) -> Path:
    """Fake MNIST whose training images carry their own index in two central pixels (or all show one bar)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = digit_images(np.zeros(n, int) if same_picture else labels)
        images[:, 14, 14], images[:, 14, 15] = np.arange(n) // 256, np.arange(n) % 256
        if same_picture:
            images[:] = images[0]
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


def test_prepare_leaves_out_the_digits_of_the_bundled_sample(cli, tmp_path):
    src = _indexed_mnist(tmp_path / "mnist")
    code, _, err = cli("prepare", f"--source={src}", "--out=a", "--train_shards=2", "--shard_size=40", "--test_size=10", "--degrees=0")
    assert code == 0, err
    data = ft.read_corrupted_mnist(tmp_path / "a")
    picked = (data.train_images[:, 0, 14, 14] * 255).round().long() * 256 + (data.train_images[:, 0, 14, 15] * 255).round().long()
    labels = np.arange(5100) % 10
    in_sample = ft.sample_digits(labels)
    assert in_sample.sum() == 5000 and not in_sample[picked.numpy()].any()
    assert len(set(picked.tolist())) == 80 and (data.train_labels.numpy() == labels[picked.numpy()]).all()
    code, _, err = cli("prepare", f"--source={src}", "--out=b", "--train_shards=2", "--shard_size=60", "--degrees=0")
    assert_one_line_error(code, err, "100 training digits outside the bundled sample", exit_code=2)


def test_prepare_course_mode_turns_each_shard_by_one_angle_nearest_and_train_reads_it(cli, tmp_path):
    src = _indexed_mnist(tmp_path / "mnist", same_picture=True)
    code, _, err = cli("prepare", f"--source={src}", "--out=data/corruptmnist_v1", "--mode=course", "--shard_size=10", "--test_size=10")
    assert code == 0, err
    folder = tmp_path / "data" / "corruptmnist_v1"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        ["prepare.json", "test_images.pt", "test_target.pt"] + [f"train_{k}_{i}.pt" for i in range(6) for k in ("images", "target")]
    )
    plan = json.loads((folder / "prepare.json").read_text())
    assert plan["mode"] == "course" and plan["interpolation"] == "nearest" and len(plan["train_angles"]) == 6
    picture = torch.from_numpy(ft.read_idx(src / "train-images-idx3-ubyte.gz")[:1]).float().div(255).unsqueeze(1)
    for i, angle in enumerate(plan["train_angles"]):
        shard = torch.load(folder / f"train_images_{i}.pt", weights_only=True)
        assert shard.shape == (10, 28, 28) and shard.dtype == torch.float32
        expected = ft.rotate_all(picture, torch.tensor([float(angle)]), "nearest")[0, 0]
        assert all(torch.allclose(image, expected, atol=2e-3) for image in shard)  # one angle for the whole shard
    values = set((torch.load(folder / "test_images.pt", weights_only=True) * 255).round().unique().tolist())
    assert values <= set((picture * 255).round().unique().tolist()) | {0.0}  # nearest neighbour: no blended grey levels
    code, _, err = cli("train", "--epochs=1", "--batch_size=16", "--out=run")
    assert code == 0, err
    assert "data: data/corruptmnist_v1 (.pt layout, 6 train shards)" in err and "training on 60 corruptedmnist images" in err


def test_prepare_if_missing_says_in_one_line_when_the_data_was_built_with_other_settings(cli, tmp_path):
    src = _indexed_mnist(tmp_path / "mnist")
    args = ("prepare", f"--source={src}", "--out=data/corruptedmnist", "--shard_size=10", "--test_size=10", "--if_missing")
    assert cli(*args)[0] == 0
    built = {p.name: p.read_bytes() for p in (tmp_path / "data" / "corruptedmnist").iterdir()}
    code, out, err = cli(*args)
    assert code == 0 and out == "data: data/corruptedmnist already holds corrupted MNIST (npz layout, 5 train shards); nothing to build\n"
    code, out, err = cli(*args, "--mode=course")  # PREPARE_FLAGS changed in the notebook after the data was built
    assert code == 0 and out.count("\n") == 1 and not err, out + err
    assert "built with --mode=per-image --train_shards=5, not --mode=course --train_shards=6:" in out
    assert "nothing was built" in out and "--force" in out and "--data_dir=" in out
    assert {p.name: p.read_bytes() for p in (tmp_path / "data" / "corruptedmnist").iterdir()} == built


def test_prepare_bilinear_interpolation_is_still_there(cli, tmp_path):
    src = _indexed_mnist(tmp_path / "mnist", same_picture=True)
    args = (f"--source={src}", "--train_shards=1", "--shard_size=10", "--test_size=10")
    assert cli("prepare", *args, "--out=n")[0] == 0 and cli("prepare", *args, "--out=b", "--interpolation=bilinear")[0] == 0
    nearest, bilinear = (np.load(tmp_path / name / "test.npz")["images"] for name in "nb")
    assert len(np.unique(bilinear)) > len(np.unique(nearest))
    assert_one_line_error(*cli("prepare", *args, "--out=x", "--interpolation=cubic")[::2], "--interpolation", exit_code=2)
    assert_one_line_error(*cli("prepare", *args, "--out=x", "--mode=chunks")[::2], "--mode", exit_code=2)


def test_rotation_keeps_ink_and_rotates_by_the_angle():
    bar = torch.zeros(1, 1, 28, 28)
    bar[0, 0, 4:24, 13:15] = 1
    turned = ft.affine_warp(bar, torch.tensor([90.0]))
    assert torch.allclose(turned.sum(), bar.sum(), rtol=0.05)
    assert turned[0, 0, 13:15, 4:24].mean() > 0.9  # the vertical bar is now horizontal


def test_prepare_rejects_bad_source(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = cli("prepare", f"--source={tmp_path / 'empty'}")
    assert_one_line_error(code, err, "train-images-idx3-ubyte")
    code, _, err = cli("prepare", f"--source={tmp_path / 'missing'}")
    assert_one_line_error(code, err, "not a folder")


class _Server:
    """A local HTTP server on 127.0.0.1 serving a folder, for the download path."""

    def __init__(self, folder: Path):
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **k)  # noqa: E731
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    s = _Server(served)
    s.folder = served
    yield s
    s.close()


def _sha_of_content(path: Path) -> str:
    return "sha256:" + hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()


def test_download_good_file(server, tmp_path):
    good = write_idx(server.folder / "t10k-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8))
    dest = tmp_path / "cache" / good.name
    ft.download(server.url + good.name, dest, _sha_of_content(good))
    assert dest.read_bytes() == good.read_bytes()
    assert list(dest.parent.iterdir()) == [dest]


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path):
    good = write_idx(server.folder / "t10k-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8))
    dest = tmp_path / "cache" / good.name
    with pytest.raises(ft.UserError, match="checksum mismatch"):
        ft.download(server.url + good.name, dest, "sha256:" + "0" * 64)
    assert list(dest.parent.iterdir()) == []


def test_download_corrupt_gzip_and_404_and_refused(server, tmp_path):
    (server.folder / "x.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ft.UserError, match="not a valid gzip"):
        ft.download(server.url + "x.gz", tmp_path / "c" / "x.gz", "sha256:" + "0" * 64)
    with pytest.raises(ft.UserError, match="404"):
        ft.download(server.url + "missing.gz", tmp_path / "c" / "missing.gz", "sha256:" + "0" * 64)
    with pytest.raises(ft.UserError, match="download failed"):
        ft.download("http://127.0.0.1:9/nothing.gz", tmp_path / "c" / "n.gz", "sha256:" + "0" * 64, timeout=2)
    assert list((tmp_path / "c").iterdir()) == []


def test_prepare_downloads_verifies_and_reports_a_bad_mirror(cli, server, tmp_path, monkeypatch):
    write_mnist_folder(server.folder)
    sums = {p.name: _sha_of_content(p) for p in server.folder.glob("*.gz")}
    monkeypatch.setitem(ft.DATA_FILES, "mnist", dataclasses.replace(ft.DATA_FILES["mnist"], checksums=sums))
    code, _, err = cli("prepare", f"--mirror={server.url}", "--out=c", "--train_shards=1", "--shard_size=10", "--test_size=10")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(p.name for p in server.folder.iterdir())
    assert ft.read_corrupted_mnist(tmp_path / "c").train_images.shape == (10, 1, 28, 28)
    # a corrupt copy on the mirror: checksum error, one line, nothing cached
    (server.folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"garbage"))
    (tmp_path / "data" / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    code, _, err = cli("prepare", f"--mirror={server.url}", "--out=d")
    assert_one_line_error(code, err, "checksum mismatch", "--source=")
    assert not (tmp_path / "data" / "mnist" / "train-labels-idx1-ubyte.gz").exists() and not (tmp_path / "d").exists()
