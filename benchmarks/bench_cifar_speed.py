"""Seconds per training epoch on CIFAR-10-shaped data (3×32×32), with the default cifar recipe, on this machine.

Usage: python benchmarks/bench_cifar_speed.py [--images=50000]
Speed does not depend on what the pixels show, so random images stand in for CIFAR-10 where it cannot be had.
Accuracy is not measured here.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import fashion_trainer as ft  # noqa: E402


def main() -> None:
    """Train one epoch on random CIFAR-shaped images and print its time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50000)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(args.images, 3, 32, 32, generator=g), torch.randint(0, 10, (args.images,), generator=g)
    data = ft.Data.of([(x, y)], (x[:1000], y[:1000]), ft.DATASETS["cifar"].classes, "random", (3, 32, 32))
    config = ft.TrainConfig(dataset="cifar", epochs=1, val_fraction=0.02).resolved()  # the default cifar recipe
    with tempfile.TemporaryDirectory() as tmp:
        history = ft.fit(data, Path(tmp), config, torch.device("cpu"), None, ft.Ranks(), None)
    trained = args.images - round(args.images * 0.02)
    print(f"one epoch over {trained} CIFAR-shaped images: {history['epochs'][0]['seconds']:.1f} s ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
