"""Short --budget runs as a user starts them: accuracy, epochs, and what the run says (or refuses), per build and precision.

Usage: python benchmarks/bench_budget.py [--mnist=../shared/data/mnist] [--builds=per-image:4,course:6] [--budgets=2,3,10]
                                         [--precisions=auto,fp32] [--out=bench-budget.json]

Builds each MODE:SEED with `prepare` (never a build the recipe was tuned on: per-image seed 100, course seeds 1 and 5),
then for each precision and budget runs `train --budget=B` and `evaluate`, each a process of its own, and keeps the
`start:` line (the one-time start, a step, an epoch) or the refusal. Prints a Markdown table and the machine.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks")]
from bench_corrupted_mnist import cli, machine, mnist_parser, test_accuracy  # noqa: E402


def main() -> None:
    parser = mnist_parser(__doc__, "bench-budget.json")
    parser.add_argument("--builds", default="per-image:4,course:6", help="MODE:SEED of each build")
    parser.add_argument("--budgets", default="2,3,10", help="the --budget values, seconds")
    parser.add_argument("--precisions", default="auto,fp32")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for build in args.builds.split(","):
            mode, seed = build.split(":")
            data = Path(work) / build.replace(":", "-")
            cli("prepare", f"--source={args.mnist}", f"--out={data}", f"--mode={mode}", f"--seed={seed}")
            for precision in args.precisions.split(","):
                for budget in args.budgets.split(","):
                    out = Path(work) / f"{data.name}-{precision}-{budget}"
                    command = [sys.executable, str(ROOT / "fashion_trainer.py"), "train", f"--data_dir={data}", f"--out={out}"]
                    command += [f"--budget={budget}", f"--precision={precision}"]
                    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
                    said = re.search(r"^(start: .*|error: .*)$", result.stderr, re.MULTILINE)
                    row = {"build": build, "precision": precision, "budget": float(budget), "exit": result.returncode}
                    row["said"] = said.group(1) if said else result.stderr[-300:]
                    if result.returncode == 0:
                        history = json.loads((out / "history.json").read_text())
                        row |= {
                            "epochs": len(history["epochs"]),
                            "steps": len(history["steps"]),
                            "seconds": history["epochs"][-1]["seconds"],
                        }
                        row["accuracy"] = test_accuracy(cli("evaluate", str(out / "best.pt"), f"--data_dir={data}")[0])
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1) + "\n")
    print(
        f"\nMachine: {machine()}\n\n| build | precision | --budget | test accuracy | steps (epochs) | trained s |\n| --- | --- | --- | --- | --- | --- |"
    )
    for r in rows:
        if r["exit"]:
            print(f"| {r['build']} | {r['precision']} | {r['budget']:g} | refused: {r['said'][7:90]}… | | |")
        else:
            print(
                f"| {r['build']} | {r['precision']} | {r['budget']:g} | {100 * r['accuracy']:.2f} % | {r['steps']} ({r['epochs']}) | {r['seconds']:.1f} |"
            )


if __name__ == "__main__":
    main()
