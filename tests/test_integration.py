"""Integration: the real MNIST files in ../shared/data (skipped where absent) and the bundled sample end to end."""

import json

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, ft, needs_shared_mnist
from test_data import _Server

pytestmark = pytest.mark.integration


@needs_shared_mnist
def test_prepare_downloads_the_real_files_and_verifies_the_real_checksums(cli, tmp_path):
    server = _Server(SHARED_DATA / "mnist")  # serves the real files over HTTP on 127.0.0.1
    try:
        code, out, err = cli("prepare", f"--mirror={server.url}", "--out=full")
    finally:
        server.close()
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(p.name for p in (SHARED_DATA / "mnist").iterdir())
    data = ft.read_corrupted_mnist(tmp_path / "full")
    assert data.train_images.shape == (25000, 1, 28, 28) and data.test_images.shape == (10000, 1, 28, 28)
    # the test split is the MNIST test set in order, so its class counts are the published ones
    assert np.bincount(data.test_labels.numpy()).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert "5 × 5000 train and 10000 test" in out


@needs_shared_mnist
def test_one_epoch_on_full_corrupted_mnist_learns(cli, tmp_path):
    code, _, err = cli("prepare", f"--source={SHARED_DATA / 'mnist'}", "--out=full")
    assert code == 0, err
    code, _, err = cli("train", "--data_dir=full", "--out=run", "--epochs=1")
    assert code == 0, err
    code, out, _ = cli("evaluate", "run/best.pt", "--data_dir=full")
    assert code == 0
    assert float(out.split(":")[1].split("%")[0]) > 93.0 and out.strip().endswith("/10000)")


def test_train_without_data_uses_the_bundled_sample_and_reaches_93_percent_in_four_epochs(cli, tmp_path):
    code, out, err = cli("train", "--out=run", "--epochs=4")  # 96.1 % measured; the default 10 epochs take 2.5x as long
    assert code == 0, err
    assert "bundled" in err
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["config"]["data_dir"] == str(ft.SAMPLE_DATA_DIR)
    code, out, err = cli("evaluate", "run/best.pt")
    assert code == 0, err
    assert float(out.split(":")[1].split("%")[0]) >= 93.0 and out.strip().endswith("/1000)")


@needs_shared_mnist
def test_shard_angles_of_the_course_generator_are_measured_within_two_degrees(cli, tmp_path):
    code, _, err = cli(
        "prepare", f"--source={SHARED_DATA / 'mnist'}", "--out=c", "--mode=course", "--shard_size=1000", "--test_size=100", "--seed=7"
    )
    assert code == 0, err
    data = ft.read_corrupted_mnist(tmp_path / "c")
    measured = ft.shard_angles(data.train_images, data.train_labels, data.shard_ids)
    drawn = json.loads((tmp_path / "c" / "prepare.json").read_text())["train_angles"]
    assert len(measured) == 6 and max(abs(m - d) for m, d in zip(measured.tolist(), drawn)) < 2
    turns = ft.upright_turns(data, torch.arange(len(data.train_labels)), ft.DATASETS["corruptedmnist"].augmentation)
    assert torch.allclose(turns[::1000], -measured)
