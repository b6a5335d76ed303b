"""What each of optimizer.zero_grad(), loss.backward() and optimizer.step() does, measured: draws docs/three_calls.png.

Usage: python scripts/three_calls.py [--steps=60] [--out=docs/three_calls.png]
Trains the same small model from the same start on 512 digits of the bundled sample, four times: with all three
calls, and with each one left out, and plots the training loss of each run per step.
"""

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import fashion_trainer as ft  # noqa: E402

VARIANTS = ("all three calls", "without zero_grad()", "without backward()", "without step()")


def loss_curves(steps: int = 60, seed: int = 0, lr: float = 0.2) -> dict[str, list[float]]:
    """Training loss per step for each variant, from identical starting weights and batches."""
    data = ft.read_corrupted_mnist(ft.SAMPLE_DATA_DIR)
    x, y = data.train_images[:512].reshape(512, -1), data.train_labels[:512]
    torch.manual_seed(seed)
    start = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    curves = {}
    for variant in VARIANTS:
        model = copy.deepcopy(start)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        losses = []
        for step in range(steps):
            idx = torch.arange(step * 64, step * 64 + 64) % 512
            if variant != "without zero_grad()":
                optimizer.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            if variant != "without backward()":
                loss.backward()
            if variant != "without step()":
                optimizer.step()
            losses.append(loss.item())
        curves[variant] = losses
    return curves


def main() -> None:
    """Measure the four variants and plot them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default=str(ROOT / "docs" / "three_calls.png"))
    args = parser.parse_args()
    curves = loss_curves(args.steps)
    plt = ft._pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=90)
    for variant, losses in curves.items():  # without backward() and without step() coincide: dashes keep both visible
        ax.plot(range(1, len(losses) + 1), losses, label=variant, lw=1.5, ls="--" if variant == "without backward()" else "-")
    ax.set_xlabel("training step (batch of 64 digits)")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title("Leaving out one of the three calls of a training step")
    ax.legend()
    fig.tight_layout()
    ft.save_figure(fig, Path(args.out))
    for variant, losses in curves.items():
        print(f"{variant:>22}: loss {losses[0]:.3f} -> {losses[-1]:.3f}")


if __name__ == "__main__":
    main()
