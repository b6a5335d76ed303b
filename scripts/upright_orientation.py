"""Measure UPRIGHT_ORIENTATION: per class, the mean ink orientation of the upright MNIST training digits.

Usage: python scripts/upright_orientation.py [../shared/data/mnist]
Prints the table that fashion_trainer.py holds; shard_angles() compares a shard's digits against it.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fashion_trainer as ft


def main() -> None:
    """Read MNIST's training IDX files and print the per-class mean of ink_orientation."""
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    arrays = ft.read_idx_arrays(folder, ("train",))
    images = torch.from_numpy(arrays["train_images"]).float().div(255).unsqueeze(1)
    labels = torch.from_numpy(arrays["train_labels"]).long()
    orientation = ft.ink_orientation(images)
    for digit in range(10):
        mean = orientation[labels == digit].mean()
        print(f"complex({mean.real:.3f}, {mean.imag:.3f}),  # {digit}")


if __name__ == "__main__":
    main()
