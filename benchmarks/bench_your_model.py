"""The course's own model, in our harness and in the course's plain loop, on data it never tuned on (#36).

Usage: python benchmarks/bench_your_model.py [--mnist=../shared/data/mnist] [--builds=course:4,per-image:3]
                                             [--out=bench-your-model.json]

Copies tests/fixtures/course_model.py (the course's shape: three convolutions and a linear layer, `MyAwesomeModel`)
into a temporary model.py, builds each MODE:SEED with `prepare` (never a build the recipe was tuned on: per-image seed
100, course seeds 1 and 5) and, each as a user runs it:
  - `train --model=model.py:MyAwesomeModel` with our defaults, then `evaluate` (test turns and single view), and the
    same with `--augment=False` (the dataset's augmentation was tuned for our CNN);
  - the same class in the course's loop: Adam 1e-3, batch 32, 10 epochs, no augmentation, fp32 (the reference's loop);
  - `train --model=... --budget=S` with S the course loop's training seconds: the harness in the same time.
Prints a Markdown table and the machine; writes the JSON.
"""

import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks")]
from bench_corrupted_mnist import cli, machine, mnist_parser, run_ours, run_reference  # noqa: E402


def main() -> None:
    parser = mnist_parser(__doc__, "bench-your-model.json")
    parser.add_argument("--builds", default="course:4,per-image:3", help="MODE:SEED of each build")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        model_file = Path(work) / "model.py"
        shutil.copy(ROOT / "tests" / "fixtures" / "course_model.py", model_file)
        spec = importlib.util.spec_from_file_location("course_model", model_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        flag = f"--model={model_file}:MyAwesomeModel"
        for build in args.builds.split(","):
            mode, seed = build.split(":")
            data = Path(work) / build.replace(":", "-")
            cli("prepare", f"--source={args.mnist}", f"--out={data}", f"--mode={mode}", f"--seed={seed}")
            ours = run_ours(data, Path(work) / f"{data.name}-ours", flag)
            plain_warps = run_ours(data, Path(work) / f"{data.name}-unwarped", flag, "--augment=False")
            plain = run_reference(data, build=module.MyAwesomeModel)
            budget = run_ours(data, Path(work) / f"{data.name}-budget", flag, f"--budget={plain['train_seconds']:.0f}")
            rows.append({"build": build, "harness": ours, "harness_unwarped": plain_warps, "course_loop": plain, "harness_budget": budget})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1) + "\n")
    print(f"\nMachine: {machine()}\n")
    print("| build | the course's loop | our harness, defaults | `--augment=False` | `--budget` of the loop's seconds |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        plain, ours, unwarped, budget = r["course_loop"], r["harness"], r["harness_unwarped"], r["harness_budget"]
        print(
            f"| {r['build']} | {100 * plain['test_accuracy']:.2f} % in {plain['train_seconds']:.0f} s "
            f"| {100 * ours['test_accuracy']:.2f} % in {ours['train_seconds']:.0f} s "
            f"| {100 * unwarped['test_accuracy']:.2f} % in {unwarped['train_seconds']:.0f} s "
            f"| {100 * budget['test_accuracy']:.2f} % in {budget['train_seconds']:.0f} s ({budget['epochs']} epochs) |"
        )


if __name__ == "__main__":
    main()
