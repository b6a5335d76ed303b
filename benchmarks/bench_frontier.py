"""What you get for your time: test accuracy against training seconds, ours at --budget = 0.5, 1, 2 and 4 times the
course reference's 10-epoch time (bf16 where the CPU computes in it, and fp32), beside the reference's epoch by epoch.

Usage: python benchmarks/bench_frontier.py [--mnist=../shared/data/mnist] [--seed=4] [--factors=0.5,1,2,4]
                                           [--out=bench-frontier.json] [--plot=docs/frontier.png]
        python benchmarks/bench_frontier.py --report bench-frontier.json   (tables and plot again from the JSON)

It builds its own per-image corrupted MNIST with `prepare --seed=SEED` (never a build the recipe was tuned on: those
are per-image seed 100 and course seeds 1 and 5), trains the reference (3 convolutions, Adam 1e-3, batch 32, fp32, as
bench_corrupted_mnist.py does) scoring the test split after every epoch (that scoring is not counted as training
time), then runs `train --budget=...` and `evaluate` as a user would, each in its own process. It also times
`evaluate` from process start to exit (three turns and single view, bf16 and fp32) beside a process that evaluates the
reference as the course's evaluate does. Prints Markdown tables and the machine; writes the JSON and the plot.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from bench_corrupted_mnist import cli, machine, mnist_parser, test_accuracy, train_reference  # noqa: E402

import fashion_trainer as ft  # noqa: E402

# The course's evaluate, as a process of its own: load the weights and the test tensors, predict in batches of 32.
REFERENCE_EVALUATE = """
import sys, torch
sys.path[:0] = [sys.argv[1]]
from bench_corrupted_mnist import course_reference_model
model = course_reference_model()
model.load_state_dict(torch.load(sys.argv[2], weights_only=True))
images, labels = torch.load(sys.argv[3], weights_only=True)
model.eval()
with torch.no_grad():
    predictions = torch.cat([model(images[i : i + 32]).argmax(1) for i in range(0, len(images), 32)])
print(f"Test accuracy: {100 * float((predictions == labels).float().mean()):.2f}%")
"""


def reference_curve(data_dir: Path, work: Path) -> dict:
    """Train the reference; after each epoch, its test accuracy and the training seconds so far. Saves the weights and
    the test split for the evaluate process."""
    data = ft.read_corrupted_mnist(data_dir)
    points = []

    def score(model: torch.nn.Module, seconds: float) -> None:
        model.eval()
        with torch.no_grad():
            predictions = torch.cat([model(data.test_images[i : i + 500]).argmax(1) for i in range(0, len(data.test_images), 500)])
        points.append((seconds, float((predictions == data.test_labels).float().mean())))

    model, seconds = train_reference(data, score)
    torch.save(model.state_dict(), work / "reference.pt")
    torch.save((data.test_images, data.test_labels), work / "test.pt")
    return {"points": points, "train_seconds": seconds}


def timed_process(*args: str) -> float:
    """Wall seconds of a Python process, start to exit."""
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    """Build the data, train the reference and the budgets, time evaluate, report."""
    parser = mnist_parser(__doc__, "bench-frontier.json")
    parser.add_argument("--seed", type=int, default=4, help="prepare seed of the per-image build")
    parser.add_argument("--factors", default="0.5,1,2,4", help="budgets, as multiples of the reference's 10 epochs")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "frontier.png"))
    args = parser.parse_args()
    bf16 = ft.autocast_dtype(torch.device("cpu"), "auto") is not None
    results: dict = {"machine": machine(), "seed": args.seed, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        cli("prepare", f"--source={args.mnist}", f"--out={data}", f"--seed={args.seed}")
        results["reference"] = reference_curve(data, work)
        print(f"reference: {results['reference']}", file=sys.stderr, flush=True)
        reference_seconds = results["reference"]["train_seconds"]
        for precision in ("bf16", "fp32") if bf16 else ("fp32",):
            for factor in [float(f) for f in args.factors.split(",")]:
                budget = round(factor * reference_seconds)
                out = work / f"run_{precision}_{factor:g}"
                cli("train", f"--data_dir={data}", f"--out={out}", f"--budget={budget}", f"--precision={precision}")
                history = json.loads((out / "history.json").read_text())
                scoring = "--precision=auto" if precision == "bf16" else "--precision=fp32"  # evaluate: bf16 where the CPU has it
                result, seconds = cli("evaluate", str(out / "best.pt"), f"--data_dir={data}", scoring)
                single, single_seconds = cli("evaluate", str(out / "best.pt"), f"--data_dir={data}", scoring, "--tta=False")
                run = {
                    "precision": precision,
                    "factor": factor,
                    "budget": budget,
                    "epochs": history["epochs"][-1]["step"] / history["epochs"][0]["step"],  # the last may stop part-way
                    "train_seconds": history["epochs"][-1]["seconds"],
                    "test_accuracy": test_accuracy(result),
                    "single_view": test_accuracy(single),
                    "evaluate_seconds": seconds,
                    "evaluate_single_seconds": single_seconds,
                }
                results["runs"].append(run)
                print(run, file=sys.stderr, flush=True)
                Path(args.out).write_text(json.dumps(results, indent=1))
        script = work / "reference_evaluate.py"
        script.write_text(REFERENCE_EVALUATE)
        results["reference"]["evaluate_seconds"] = timed_process(
            str(script), str(ROOT / "benchmarks"), str(work / "reference.pt"), str(work / "test.pt")
        )
        results["import_torch_seconds"] = timed_process("-c", "import torch")
    Path(args.out).write_text(json.dumps(results, indent=1))
    report(results, Path(args.plot))


def report(results: dict, plot: Path | None) -> None:
    """The Markdown tables, and the plot."""
    ref = results["reference"]
    print(f"\nMachine: {results['machine']}; per-image corrupted MNIST, prepare --seed={results['seed']}\n")
    print("| configuration | epochs | training s | × reference | `evaluate` (3 turns) | single view | evaluate s (3 turns / single) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results["runs"]:
        print(
            f"| `--budget={r['budget']}` {r['precision']} ({r['factor']:g}×) | {r['epochs']:.1f} | {r['train_seconds']:.0f} | "
            f"{r['train_seconds'] / ref['train_seconds']:.2f} | {100 * r['test_accuracy']:.2f} % | {100 * r['single_view']:.2f} % | "
            f"{r['evaluate_seconds']:.1f} / {r['evaluate_single_seconds']:.1f} |"
        )
    last_seconds, last_accuracy = ref["points"][-1]
    print(f"| course reference, 10 epochs (fp32) | 10 | {last_seconds:.0f} | 1.00 | {100 * last_accuracy:.2f} % | — | ", end="")
    print(f"{ref.get('evaluate_seconds', float('nan')):.1f} (its own process) |")
    print(f"\nimport torch alone: {results.get('import_torch_seconds', float('nan')):.1f} s")
    if plot is None:
        return
    plt = ft._pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(
        [s for s, _ in ref["points"]], [100 * a for _, a in ref["points"]], "s-", color="grey", label="course reference, per epoch (fp32)"
    )
    for precision, colour in (("bf16", "tab:blue"), ("fp32", "tab:orange")):
        runs = [r for r in results["runs"] if r["precision"] == precision]
        if runs:
            xs, ys = [r["train_seconds"] for r in runs], [100 * r["test_accuracy"] for r in runs]
            ax.plot(xs, ys, "o-", color=colour, label=f"fashion_trainer --budget, {precision}")
            for r in runs:
                ax.annotate(
                    f"{r['factor']:g}×",
                    (r["train_seconds"], 100 * r["test_accuracy"]),
                    fontsize=7,
                    xytext=(3, -9),
                    textcoords="offset points",
                )
    ax.set_xscale("log")
    ax.set_ylim(max(90.0, min(100 * a for _, a in ref["points"]) - 0.5), 100)
    ax.set_xlabel("training seconds (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"What you get for your time: per-image corrupted MNIST\n{results['machine']}", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    ft.save_figure(fig, plot)
    print(f"plot: {plot}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        report(json.loads(Path(sys.argv[2]).read_text()), ROOT / "docs" / "frontier.png")
    else:
        main()
