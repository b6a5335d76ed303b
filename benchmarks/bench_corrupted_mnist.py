"""The corrupted-MNIST benchmark behind the README's results table: data it builds itself, beside the course's model.

Usage: python benchmarks/bench_corrupted_mnist.py [--mnist=../shared/data/mnist] [--seeds=1,2,3] [--course_seeds=2,3,4,6,11]
                                                  [--out=bench-results.json]
In one run it builds every dataset with `prepare --source=<mnist>` (never the builds the recipe was tuned on: per-image
seed 100, course seeds 1 and 5), then, each as a user would run it (a real `python fashion_trainer.py` process):
  - per-image data (nearest neighbour, the default): `train` and `evaluate` (three turns and single view) per seed;
  - `--lr=1e-4` on the first per-image seed;
  - course-mode data (one angle per 5,000-digit shard, one for the 5,000 test digits) per course seed: the angles,
    the test angle's distance to the nearest training angle, test accuracy;
  - the default run with `--precision=fp32` (seconds per epoch, beside the reference's);
  - the course's reference model (3 convolutions, Adam 1e-3, batch 32, 10 epochs, no shuffling, fp32) on the same data;
  - `train --budget=<the reference's 10-epoch seconds>`;
  - `evaluate`'s wall time on the 10,000 test digits (process start to exit) beside the reference's in-process evaluation.
It prints Markdown tables and the machine, and writes every figure to --out as JSON.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import fashion_trainer as ft  # noqa: E402


def cli(*args: str) -> tuple[str, float]:
    """Run fashion_trainer.py as a user would; returns stdout and the wall time; stops with stderr on failure."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(ROOT / "fashion_trainer.py"), *args], capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr}")
    return result.stdout, time.perf_counter() - started


def test_accuracy(line: str) -> float:
    """The accuracy in evaluate's result line."""
    return float(re.search(r"Test accuracy: ([\d.]+)%", line).group(1)) / 100


def run_ours(data: Path, out: Path, *flags: str) -> dict:
    """Train one configuration, evaluate it with and without test-time turns (naming the --model it trained, if any)."""
    cli("train", f"--data_dir={data}", f"--out={out}", *flags)
    history = json.loads((out / "history.json").read_text())
    model = [f for f in flags if f.startswith("--model=")]
    tta, tta_seconds = cli("evaluate", str(out / "best.pt"), f"--data_dir={data}", *model)
    single, single_seconds = cli("evaluate", str(out / "best.pt"), f"--data_dir={data}", "--tta=False", *model)
    seconds = history["epochs"][-1]["seconds"]
    return {
        "flags": list(flags),
        "test_accuracy": test_accuracy(tta),
        "single_view": test_accuracy(single),
        "train_seconds": seconds,
        "epochs": len(history["epochs"]),
        "seconds_per_epoch": seconds / len(history["epochs"]),
        "evaluate_seconds": tta_seconds,
        "evaluate_single_seconds": single_seconds,
    }


def course_reference_model() -> nn.Sequential:
    """The course's reference CNN: 3 conv layers 32/64/128 with max pooling, dropout, one linear layer."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(128, 10),
    )  # fmt: skip


def train_reference(
    data: ft.Data, after_epoch: Callable[[nn.Module, float], None] | None = None, build: Callable[[], nn.Module] | None = None
) -> tuple[nn.Module, float]:
    """Train the course reference (or `build()`'s model) as the course's loop does (Adam 1e-3, batch 32, 10 epochs, no
    shuffling, fp32) on our training split; returns it and its training seconds. after_epoch(model, seconds so far) runs
    after each epoch, outside the timed part."""
    train_idx, _ = ft.split_validation(len(data.train_images), 0.05, 0)
    x, y = data.train_images[train_idx], data.train_labels[train_idx]
    torch.manual_seed(0)
    model = (build or course_reference_model)()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seconds = 0.0
    for _ in range(10):
        started = time.perf_counter()
        model.train()
        for i in range(0, len(x), 32):
            optimizer.zero_grad()
            F.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
            optimizer.step()
        seconds += time.perf_counter() - started
        if after_epoch is not None:
            after_epoch(model, seconds)
    return model, seconds


def run_reference(data_dir: Path, build: Callable[[], nn.Module] | None = None) -> dict:
    """Train the course reference (or `build()`'s model) in the course's loop; time its evaluation of the test split
    in-process, as the course's evaluate does (batches of 32)."""
    data = ft.read_corrupted_mnist(data_dir)
    model, seconds = train_reference(data, build=build)
    started = time.perf_counter()
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(data.test_images[i : i + 32]).argmax(1) for i in range(0, len(data.test_images), 32)])
    evaluate_seconds = time.perf_counter() - started
    return {
        "test_accuracy": float((predictions == data.test_labels).float().mean()),
        "train_seconds": seconds,
        "seconds_per_epoch": seconds / 10,
        "evaluate_seconds": evaluate_seconds,
    }


def machine() -> str:
    """The CPU's name, whether it computes in bf16, threads and torch."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        name = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")), name)
    bf16 = "with" if ft.autocast_dtype(torch.device("cpu"), "auto") is not None else "without"
    return f"{name} ({bf16} native bf16), {torch.get_num_threads()} threads, torch {torch.__version__}, no GPU used"


def mnist_parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The flags of every benchmark that builds its data from MNIST: --mnist (the real files) and --out (its JSON)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--mnist", default=str(ROOT.parent / "shared" / "data" / "mnist"), help="folder of the four MNIST IDX files")
    parser.add_argument("--out", default=out, help="where the results are written as JSON")
    return parser


def main() -> None:
    """Build the data, run every configuration, print the tables."""
    parser = mnist_parser(__doc__, "bench-results.json")
    parser.add_argument("--seeds", default="1,2,3", help="prepare seeds of the per-image builds")
    parser.add_argument("--course_seeds", default="2,3,4,6,11", help="prepare seeds of the course-mode builds")
    args = parser.parse_args()
    results: dict = {"machine": machine(), "per_image": {}, "course": {}}

    def save() -> None:
        Path(args.out).write_text(json.dumps(results, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seeds = [int(s) for s in args.seeds.split(",")]
        for seed in seeds:
            data = work / f"per_image_{seed}"
            cli("prepare", f"--source={args.mnist}", f"--out={data}", f"--seed={seed}")
            results["per_image"][seed] = run_ours(data, work / f"run_{seed}")
            print(f"per-image seed {seed}: {results['per_image'][seed]}", file=sys.stderr, flush=True)
            save()
        first = work / f"per_image_{seeds[0]}"
        results["reference"] = run_reference(first)
        print(f"reference: {results['reference']}", file=sys.stderr, flush=True)
        results["fp32"] = run_ours(first, work / "run_fp32", "--precision=fp32")
        results["low_lr"] = run_ours(first, work / "run_low_lr", "--lr=1e-4")
        budget = round(results["reference"]["train_seconds"])
        results["budget"] = run_ours(first, work / "run_budget", f"--budget={budget}") | {"budget": budget}
        save()
        for seed in [int(s) for s in args.course_seeds.split(",")]:
            data = work / f"course_{seed}"
            cli("prepare", f"--source={args.mnist}", f"--out={data}", f"--seed={seed}", "--mode=course")
            plan = json.loads((data / "prepare.json").read_text())
            gap = min(abs(plan["test_angle"] - a) for a in plan["train_angles"])
            results["course"][seed] = run_ours(data, work / f"run_course_{seed}") | {
                "train_angles": plan["train_angles"],
                "test_angle": plan["test_angle"],
                "gap": gap,
            }
            print(f"course seed {seed}: {results['course'][seed]}", file=sys.stderr, flush=True)
            save()
    report(results)


def report(results: dict) -> None:
    """The Markdown tables."""
    ref = results["reference"]
    print(f"\nMachine: {results['machine']}\n")
    print("| data | configuration | test accuracy (evaluate) | single view | training s | s/epoch | epochs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows = [(f"per-image, prepare seed {s}", "defaults", r) for s, r in results["per_image"].items()]
    first = next(iter(results["per_image"]))
    rows += [
        (f"per-image, seed {first}", "`--lr=1e-4`", results["low_lr"]),
        (f"per-image, seed {first}", "`--precision=fp32`", results["fp32"]),
    ]
    rows += [(f"per-image, seed {first}", f"`--budget={results['budget']['budget']}`", results["budget"])]
    for name, config, r in rows:
        print(
            f"| {name} | {config} | {100 * r['test_accuracy']:.2f} % | {100 * r['single_view']:.2f} % | {r['train_seconds']:.0f} | {r['seconds_per_epoch']:.1f} | {r['epochs']} |"
        )
    print(
        f"| per-image, seed {first} | course reference model (fp32) | {100 * ref['test_accuracy']:.2f} % | — | {ref['train_seconds']:.0f} | {ref['seconds_per_epoch']:.1f} | 10 |"
    )
    print("\n| course-mode draw (prepare seed) | training angles | test angle | gap | test accuracy | single view |")
    print("| --- | --- | --- | --- | --- | --- |")
    for seed, r in results["course"].items():
        angles = ", ".join(f"{a:.0f}" for a in r["train_angles"])
        print(
            f"| {seed} | {angles} | {r['test_angle']:.0f} | {r['gap']:.0f}° | {100 * r['test_accuracy']:.2f} % | {100 * r['single_view']:.2f} % |"
        )
    course = [r["test_accuracy"] for r in results["course"].values()]
    if course:
        print(f"\ncourse-mode: worst {100 * min(course):.2f} %, median {100 * statistics.median(course):.2f} %")
    fp32 = results["fp32"]
    print(
        f"fp32 training: {fp32['train_seconds']:.0f} s = {fp32['train_seconds'] / ref['train_seconds']:.2f}× the reference's 10 epochs ({ref['train_seconds']:.0f} s)"
    )
    print(
        f"fp32 per epoch: {fp32['seconds_per_epoch']:.1f} s = {fp32['seconds_per_epoch'] / ref['seconds_per_epoch']:.2f}× the reference's ({ref['seconds_per_epoch']:.1f} s)"
    )
    ours = results["per_image"][first]
    print(
        f"evaluate of 10,000 digits, process start to exit: {ours['evaluate_seconds']:.1f} s (three turns), {ours['evaluate_single_seconds']:.1f} s "
        f"(single view); the reference's in-process evaluation: {ref['evaluate_seconds']:.1f} s"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        report(json.loads(Path(sys.argv[2]).read_text()))
    else:
        main()
