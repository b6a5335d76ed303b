"""Does the number a user types for --lr matter? The default run at several --lr on corrupted MNIST.

Usage: python benchmarks/bench_lr.py [--mnist=../shared/data/mnist] [--seeds=1] [--lrs=3e-3,1e-3,1e-4,find]
       [--mode=per-image|course] [--train_flags="--precision=fp32"] [--out=bench-lr.json]

It builds data with `prepare --seed=SEED --mode=MODE` (never a build the recipe was tuned on: those are per-image seed
100 and course seeds 1 and 5), then trains with each --lr (and --train_flags) and evaluates, as a user would, each in
its own process (bench_corrupted_mnist.py's run_ours); `find` is the --lr that `lr_find` suggests on that build (with
the same --train_flags). Prints a Markdown table and the machine; writes the JSON.
"""

import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks")]
from bench_corrupted_mnist import cli, machine, mnist_parser, run_ours  # noqa: E402


def main() -> None:
    """Build the data, train at each --lr, print the table."""
    parser = mnist_parser(__doc__, "bench-lr.json")
    parser.add_argument("--seeds", default="1", help="prepare seeds of the builds")
    parser.add_argument("--lrs", default="3e-3,1e-3,1e-4", help="the --lr values to train with (find: lr_find's suggestion)")
    parser.add_argument("--mode", default="per-image", choices=("per-image", "course"), help="prepare's --mode")
    parser.add_argument("--train_flags", default="", help="more train flags for every run, e.g. --precision=fp32")
    args = parser.parse_args()
    results: dict = {"machine": machine(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seed in (int(s) for s in args.seeds.split(",")):
            data = work / f"{args.mode}_{seed}"
            cli("prepare", f"--source={args.mnist}", f"--out={data}", f"--seed={seed}", f"--mode={args.mode}")
            for lr in args.lrs.split(","):
                if lr == "find":
                    found = cli("lr_find", f"--data_dir={data}", f"--plot={work / f'lr_find_{seed}.png'}", *args.train_flags.split())[0]
                    lr = re.search(r"suggested --lr=(\S+)", found).group(1)
                    print(f"seed {seed}: lr_find suggests --lr={lr}", file=sys.stderr, flush=True)
                run = run_ours(data, work / f"run_{seed}_{lr}", f"--lr={lr}", *args.train_flags.split())
                run |= {"seed": seed, "lr": float(lr), "mode": args.mode}
                results["runs"].append(run)
                print(f"seed {seed}, --lr={lr}: {run}", file=sys.stderr, flush=True)
                Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\nMachine: {results['machine']}; {args.mode} builds; train flags: {args.train_flags or 'none'}\n")
    print("| prepare seed | `--lr` | test accuracy (evaluate) | single view | training s | epochs |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results["runs"]:
        print(
            f"| {r['seed']} | {r['lr']:g} | {100 * r['test_accuracy']:.2f} % | {100 * r['single_view']:.2f} % | {r['train_seconds']:.0f} | {r['epochs']} |"
        )


if __name__ == "__main__":
    main()
