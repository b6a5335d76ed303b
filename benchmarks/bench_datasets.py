"""Benchmark the default training recipe on real MNIST and Fashion-MNIST from ../shared/data.

Usage: python benchmarks/bench_datasets.py [--datasets=fashionmnist,mnist] [--shared=../shared/data] [--seed=0]
Each dataset is trained with `python fashion_trainer.py train --dataset=NAME --data_dir=<shared folder>` (all other
flags at their defaults) and evaluated on its 10k test split; prints a Markdown table of test accuracy and seconds.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks")]
from bench_corrupted_mnist import cli, machine, test_accuracy  # noqa: E402

FOLDERS = {"mnist": "mnist", "fashionmnist": "fashion-mnist"}


def main() -> None:
    """Train and evaluate each dataset, then print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="fashionmnist,mnist")
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--seed", default="0")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            out = Path(tmp) / name
            cli("train", f"--dataset={name}", f"--data_dir={Path(args.shared) / FOLDERS[name]}", f"--out={out}", f"--seed={args.seed}")
            history = json.loads((out / "history.json").read_text())
            line, _ = cli("evaluate", str(out / "best.pt"), f"--data_dir={Path(args.shared) / FOLDERS[name]}")
            accuracy = 100 * test_accuracy(line)
            rows.append((name, len(history["epochs"]), accuracy, history["epochs"][-1]["seconds"]))
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"\nMachine: {machine()}\n")
    print("| dataset | epochs | test accuracy | training seconds |")
    print("| --- | --- | --- | --- |")
    for name, epochs, accuracy, seconds in rows:
        print(f"| {name} | {epochs} | {accuracy:.2f} % | {seconds:.0f} |")


if __name__ == "__main__":
    main()
