"""Two versions of the trainer side by side on the same data: test accuracy and training seconds, run after run.

Usage: python benchmarks/bench_commits.py --base=DIR [--mnist=../shared/data/mnist] [--builds=per-image:2,course:3]
                                          [--flags=",--precision=fp32"] [--out=bench-commits.json]

DIR holds the other version (e.g. `git worktree add /tmp/base HEAD~1`). Each build is made once with this version's
`prepare --mode=MODE --seed=SEED` (never a build the recipe was tuned on: per-image seed 100, course seeds 1 and 5);
every configuration (each --flags entry, "" being the defaults) is trained and evaluated by both versions, each a real
process as a user runs it, the two alternating so that the machine's swings hit them alike. Prints a Markdown table.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks")]
from bench_corrupted_mnist import machine  # noqa: E402


def run(code: Path, *args: str) -> str:
    """`python fashion_trainer.py ARGS` of the version in `code`; its stdout (stops with its stderr on failure)."""
    result = subprocess.run(
        [sys.executable, str(code / "fashion_trainer.py"), *args], capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    if result.returncode:
        raise SystemExit(f"{code}: {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the folder of the other version")
    parser.add_argument("--mnist", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--builds", default="per-image:2,course:3", help="MODE:SEED of each build")
    parser.add_argument("--flags", default=",--precision=fp32", help="train flags of each configuration, comma-separated")
    parser.add_argument("--out", default="bench-commits.json")
    args = parser.parse_args()
    versions = {"this": ROOT, "base": Path(args.base).resolve()}
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for build in args.builds.split(","):
            mode, seed = build.split(":")
            data = Path(work) / build.replace(":", "-")
            run(ROOT, "prepare", f"--source={args.mnist}", f"--out={data}", f"--mode={mode}", f"--seed={seed}")
            for flags in args.flags.split(","):
                for name, code in versions.items():
                    out = Path(work) / f"{data.name}-{name}-{len(rows)}"
                    run(code, "train", f"--data_dir={data}", f"--out={out}", *flags.split())
                    accuracy = re.search(r"Test accuracy: ([\d.]+)%", run(code, "evaluate", str(out / "best.pt"), f"--data_dir={data}"))
                    seconds = json.loads((out / "history.json").read_text())["epochs"][-1]["seconds"]
                    rows.append({"build": build, "flags": flags or "defaults", "version": name, "accuracy": float(accuracy.group(1))})
                    rows[-1]["seconds"] = seconds
                    print(rows[-1], file=sys.stderr, flush=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1) + "\n")
    print(f"\nMachine: {machine()}\n\n| build | flags | version | test accuracy | training s |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['build']} | {r['flags']} | {r['version']} | {r['accuracy']:.2f} % | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
