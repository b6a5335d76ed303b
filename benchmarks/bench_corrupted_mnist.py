"""Benchmark on full corrupted MNIST: our defaults, --lr=1e-4, and the course's reference model, in one run.

Usage: python benchmarks/bench_corrupted_mnist.py [--mnist=../shared/data/mnist] [--seeds=0] [--skip_reference]
Builds the data with `prepare --source=<mnist>` in a temporary folder, trains each configuration as a user would
(a real `python fashion_trainer.py train` process), evaluates on the 10k test split and prints a Markdown table:
test accuracy, training seconds, and seconds until validation accuracy first reached 96.5 %.
"""

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import fashion_trainer as ft  # noqa: E402

TARGET = 0.965


def cli(*args: str) -> str:
    """Run fashion_trainer.py as a user would; returns stdout, raises with stderr on failure."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "fashion_trainer.py"), *args],
        capture_output=True,
        text=True,
        env={"TQDM_DISABLE": "1", **dict(__import__("os").environ)},
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def time_to_target(epochs: list[dict]) -> float | None:
    """Cumulative training seconds when validation accuracy first reached the target."""
    return next((e["seconds"] for e in epochs if e["val_accuracy"] >= TARGET), None)


def run_ours(data: Path, work: Path, name: str, *flags: str) -> dict:
    """Train and evaluate one configuration of fashion_trainer."""
    out = work / name
    cli("train", f"--data_dir={data}", f"--out={out}", *flags)
    history = json.loads((out / "history.json").read_text())
    line = cli("evaluate", str(out / "best.pt"), f"--data_dir={data}").strip()
    acc = float(re.search(r"([\d.]+)%", line).group(1)) / 100
    return {
        "name": name,
        "test_accuracy": acc,
        "seconds": history["epochs"][-1]["seconds"],
        "to_target": time_to_target(history["epochs"]),
        "epochs": len(history["epochs"]),
    }


def course_reference_model() -> nn.Sequential:
    """The course's reference CNN: 3 conv layers 32/64/128 with max pooling, dropout, one linear layer."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(128, 10),
    )  # fmt: skip


def run_reference(data_dir: Path, seed: int) -> dict:
    """Train the course reference (Adam 1e-3, batch 32, 10 epochs, no shuffling) on the same train/val split."""
    data = ft.read_corrupted_mnist(data_dir)
    train_idx, val_idx = ft.split_validation(len(data.train_images), 0.05, seed)
    x, y = data.train_images[train_idx], data.train_labels[train_idx]
    torch.manual_seed(seed)
    model = course_reference_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    epochs, seconds = [], 0.0
    for epoch in range(1, 11):
        started = time.perf_counter()
        model.train()
        for i in range(0, len(x), 32):
            optimizer.zero_grad()
            F.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
            optimizer.step()
        val = ft.accuracy(model, data.train_images[val_idx], data.train_labels[val_idx], torch.device("cpu"))
        seconds += time.perf_counter() - started
        epochs.append({"epoch": epoch, "val_accuracy": val, "seconds": seconds})
    test = ft.accuracy(model, data.test_images, data.test_labels, torch.device("cpu"))
    return {
        "name": "course reference (Adam 1e-3, bs 32, 10 ep)",
        "test_accuracy": test,
        "seconds": seconds,
        "to_target": time_to_target(epochs),
        "epochs": 10,
    }


def main() -> None:
    """Build the data, run every configuration, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--seeds", default="0", help="comma-separated seeds for the default configuration")
    parser.add_argument("--skip_reference", action="store_true")
    parser.add_argument("--skip_low_lr", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "corruptedmnist"
        cli("prepare", f"--source={args.mnist}", f"--out={data}")
        for seed in [int(s) for s in args.seeds.split(",")]:
            rows.append(run_ours(data, work, f"fashion_trainer defaults, seed {seed}", f"--seed={seed}"))
            print(rows[-1], file=sys.stderr, flush=True)
        if not args.skip_low_lr:
            rows.append(run_ours(data, work, "fashion_trainer --lr=1e-4", "--lr=1e-4"))
            print(rows[-1], file=sys.stderr, flush=True)
        if not args.skip_reference:
            rows.append(run_reference(data, 0))
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"\nMachine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| configuration | epochs | test accuracy | training seconds | seconds to 96.5 % (val) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        to_target = f"{r['to_target']:.0f}" if r["to_target"] is not None else "never"
        print(f"| {r['name']} | {r['epochs']} | {100 * r['test_accuracy']:.2f} % | {r['seconds']:.0f} | {to_target} |")


if __name__ == "__main__":
    main()
