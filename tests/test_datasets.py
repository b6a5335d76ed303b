"""More datasets: MNIST / Fashion-MNIST IDX folders, the CIFAR-10 python archive, and verified first-use downloads."""

import dataclasses
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, assert_one_line_error, ft, needs_shared
from test_data import _Server, write_mnist_folder

CIFAR_BATCHES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]


def cifar_members(n: int = 20, seed: int = 0) -> dict[str, bytes]:
    """Pickled batches exactly as the official cifar-10-python archive holds them (bytes keys, int labels)."""
    rng = np.random.default_rng(seed)
    members = {}
    for name in CIFAR_BATCHES:
        labels = [int(v) for v in rng.integers(0, 10, n)]
        data = rng.integers(0, 60, (n, 3072), dtype=np.uint8)
        for i, label in enumerate(labels):  # learnable: one bright red row per class
            data[i, label * 96 : label * 96 + 96] = 255
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"img.png"] * n}
        members[name] = pickle.dumps(batch, protocol=2)
    meta = {b"label_names": [c.encode() for c in ft.DATASETS["cifar"].classes], b"num_cases_per_batch": n, b"num_vis": 3072}
    members["batches.meta"] = pickle.dumps(meta, protocol=2)
    return members


def write_cifar_archive(folder: Path, members: dict[str, bytes] | None = None) -> Path:
    """A cifar-10-python.tar.gz in the official layout (members under cifar-10-batches-py/)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ft.CIFAR_ARCHIVE
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in (members or cifar_members()).items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def test_cifar_archive_reads_whole_dataset_channels_first(tmp_path):
    write_cifar_archive(tmp_path)
    data = ft.read_cifar(tmp_path, ft.DATASETS["cifar"].classes)
    assert data.train_images.shape == (100, 3, 32, 32) and data.test_images.shape == (20, 3, 32, 32)
    assert data.classes == ft.DATASETS["cifar"].classes
    first = pickle.loads(cifar_members()["data_batch_1"], encoding="bytes")
    # the first 1024 values are the red channel, row by row
    assert torch.equal(data.train_images[0, 0].flatten(), torch.from_numpy(first[b"data"][0, :1024]).float() / 255)
    assert data.train_labels[:20].tolist() == first[b"labels"]


def test_cifar_extracted_folder_reads_the_same(tmp_path):
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    for name, raw in cifar_members().items():
        (batches / name).write_bytes(raw)
    write_cifar_archive(tmp_path / "archive")
    a, b = ft.read_cifar(tmp_path, ft.DATASETS["cifar"].classes), ft.read_cifar(tmp_path / "archive", ft.DATASETS["cifar"].classes)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)


def test_malicious_pickle_in_a_cifar_batch_is_refused_without_running_code(cli, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    members = cifar_members()
    members["data_batch_3"] = pickle.dumps({b"data": Exploit(), b"labels": [1]}, protocol=2)
    write_cifar_archive(tmp_path / "c", members)
    code, _, err = cli("train", "--dataset=cifar", f"--data_dir={tmp_path / 'c'}", "--epochs=1")
    assert_one_line_error(code, err, "data_batch_3", "refused")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:500]), "unreadable"),
        (lambda p: write_cifar_archive(p.parent, {k: v for k, v in cifar_members().items() if k != "test_batch"}), "no test_batch"),
        (lambda p: write_cifar_archive(p.parent, {**cifar_members(), "data_batch_2": b"\x80\x02garbage"}), "data_batch_2"),
        (
            lambda p: write_cifar_archive(
                p.parent, {**cifar_members(), "data_batch_1": pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]})}
            ),
            "[2, 10]",
        ),
    ],
)
def test_damaged_cifar_archives_give_one_line(cli, tmp_path, damage, fragment):
    damage(write_cifar_archive(tmp_path / "c"))
    code, _, err = cli("train", "--dataset=cifar", f"--data_dir={tmp_path / 'c'}")
    assert_one_line_error(code, err, fragment)


def test_cifar_trains_end_to_end_and_evaluate_reports_per_class_and_confusion(cli, tmp_path):
    write_cifar_archive(tmp_path / "c")
    code, _, err = cli("train", "--dataset=cifar", "--data_dir=c", "--out=run", "--epochs=2", "--batch_size=32")
    assert code == 0, err
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert state["classes"] == ft.DATASETS["cifar"].classes and state["model_config"]["input_shape"] == [3, 32, 32]
    assert state["train_config"]["dataset"] == "cifar" and state["train_config"]["augmentation"]["mirror"] is True
    code, out, err = cli("evaluate", "run/best.pt", "--data_dir=c")  # the dataset comes from the checkpoint
    assert code == 0, err
    assert out.startswith("Test accuracy:") and out.strip().endswith("/20)") and len(out.splitlines()) == 1
    assert all(name in err for name in ft.DATASETS["cifar"].classes)
    assert (tmp_path / "run" / "best_confusion.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = cli("evaluate", "run/best.pt", "--dataset=mnist", f"--data_dir={write_mnist_folder(tmp_path / 'm')}")
    assert_one_line_error(code, err, "3×32×32", "--dataset")


def _md5(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar_downloads_on_first_use_verified(cli, tmp_path, monkeypatch):
    served = tmp_path / "served"
    archive = write_cifar_archive(served)
    server = _Server(served)
    try:
        spec = dataclasses.replace(ft.DATA_FILES["cifar"], checksums={ft.CIFAR_ARCHIVE: _md5(archive)}, mirrors=(server.url,))
        monkeypatch.setitem(ft.DATA_FILES, "cifar", spec)
        code, _, err = cli("train", "--dataset=cifar", "--out=run", "--epochs=1")
        assert code == 0, err
        assert (tmp_path / "data" / "cifar" / ft.CIFAR_ARCHIVE).read_bytes() == archive.read_bytes()
        # a checksum mismatch leaves nothing behind
        (tmp_path / "data" / "cifar" / ft.CIFAR_ARCHIVE).unlink()
        monkeypatch.setitem(ft.DATA_FILES, "cifar", dataclasses.replace(spec, checksums={ft.CIFAR_ARCHIVE: "md5:" + "0" * 32}))
        code, _, err = cli("train", "--dataset=cifar", "--out=run2")
        assert_one_line_error(code, err, "checksum mismatch", ft.CIFAR_ARCHIVE)
        assert list((tmp_path / "data" / "cifar").iterdir()) == [] and not (tmp_path / "run2").exists()
        # a 404
        monkeypatch.setitem(ft.DATA_FILES, "cifar", dataclasses.replace(spec, mirrors=(server.url + "nowhere/",)))
        code, _, err = cli("prepare", "--dataset=cifar")
        assert_one_line_error(code, err, "HTTP 404", "--data_dir")
    finally:
        server.close()
    # connection refused: nothing listens on port 9
    monkeypatch.setitem(ft.DATA_FILES, "cifar", dataclasses.replace(spec, mirrors=("http://127.0.0.1:9/",)))
    code, _, err = cli("train", "--dataset=cifar")
    assert_one_line_error(code, err, "could not download", "refused")
    assert list((tmp_path / "data" / "cifar").iterdir()) == []


def test_idx_datasets_train_with_their_class_names(cli, tmp_path):
    write_mnist_folder(tmp_path / "f", n_train=100, n_test=30)
    code, _, err = cli("train", "--dataset=fashionmnist", "--data_dir=f", "--out=run", "--epochs=1")
    assert code == 0, err
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert state["classes"] == ft.DATASETS["fashionmnist"].classes and state["train_config"]["augmentation"]["degrees"] == 0
    code, out, err = cli("evaluate", "run/best.pt", "--data_dir=f")
    assert code == 0 and "Ankle boot" in err and out.strip().endswith("/30)")


def test_default_folder_then_system_folder_are_used_before_downloading(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    system = write_mnist_folder(tmp_path / "usr-share")
    spec = dataclasses.replace(ft.DATA_FILES["fashionmnist"], folders=("data/fashionmnist", str(system)), mirrors=("http://127.0.0.1:9/",))
    monkeypatch.setitem(ft.DATA_FILES, "fashionmnist", spec)
    assert ft.locate("fashionmnist", None) == system
    write_mnist_folder(tmp_path / "data" / "fashionmnist")
    assert ft.locate("fashionmnist", None) == Path("data/fashionmnist")


def test_unknown_dataset_lists_the_valid_ones(cli, tiny_data):
    assert cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=1")[0] == 0
    for command in (["train"], ["prepare"], ["evaluate", "run/best.pt"], ["show"], ["knn"]):
        code, _, err = cli(*command, "--dataset=svhn")
        assert_one_line_error(code, err, "svhn", "corruptedmnist, mnist, fashionmnist, cifar", exit_code=2)


def test_prepare_fetches_a_dataset_into_its_folder(cli, tmp_path, monkeypatch):
    served = write_mnist_folder(tmp_path / "served")
    sums = {p.name: "sha256:" + hashlib.sha256(__import__("gzip").decompress(p.read_bytes())).hexdigest() for p in served.glob("*.gz")}
    server = _Server(served)
    try:
        monkeypatch.setitem(ft.DATA_FILES, "mnist", dataclasses.replace(ft.DATA_FILES["mnist"], checksums=sums, mirrors=(server.url,)))
        code, out, err = cli("prepare", "--dataset=mnist")
    finally:
        server.close()
    assert code == 0, err
    assert "5020 train / 20 test" in out and sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(sums)


@needs_shared("fashion-mnist")
def test_real_fashion_mnist_files_match_the_recorded_checksums():
    folder = SHARED_DATA / "fashion-mnist"
    for name, checksum in ft.DATA_FILES["fashionmnist"].checksums.items():
        assert ft.checksum_matches(folder / name, checksum, gzipped=True)
    data = ft.read_idx_dataset(folder, ft.DATASETS["fashionmnist"].classes)
    assert data.train_images.shape == (60000, 1, 28, 28) and np.bincount(data.test_labels.numpy()).tolist() == [1000] * 10
