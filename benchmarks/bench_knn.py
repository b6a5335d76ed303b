"""Time and peak memory of squared distances at 10k × 25k: our ‖a‖²+‖b‖²−2⟨a,b⟩ form against the naive difference form.

Usage: python benchmarks/bench_knn.py [--data_dir=data/corruptedmnist] [--naive_rows=10000]
Each method runs in a fresh process (so its peak resident memory is its own), on all test images against all
training images of corrupted MNIST, flattened to 784 pixels. The naive form, ((a[:, None] - b[None]) ** 2).sum(-1),
would need 10k × 25k × 784 floats (784 GB) at once, so it also goes 16 rows at a time. Then `knn --k=3` is timed.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import fashion_trainer as ft  # noqa: E402


def peak_mib() -> float:
    """This process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(method: str, data_dir: str, rows: int) -> dict:
    """Run one method on `rows` test images against all training images; time and extra peak memory."""
    data = ft.read_corrupted_mnist(Path(data_dir))
    a, b = data.test_images[:rows].reshape(rows, -1), data.train_images.reshape(len(data.train_images), -1)
    base = peak_mib()
    started = time.perf_counter()
    nearest = []
    if method == "ours":  # the distance block of 500 rows is what knn keeps in memory
        for i in range(0, rows, 500):
            nearest.append(ft.pairwise_sq_dist(a[i : i + 500], b).argmin(1))
    else:
        for i in range(0, rows, 16):
            nearest.append(((a[i : i + 16, None, :] - b[None, :, :]) ** 2).sum(-1).argmin(1))
    seconds = time.perf_counter() - started
    return {"method": method, "rows": rows, "seconds": seconds, "extra_peak_mib": peak_mib() - base, "nearest": torch.cat(nearest).tolist()}


def main() -> None:
    """Measure both methods in subprocesses, check they agree, time knn, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="data/corruptedmnist")
    parser.add_argument("--naive_rows", type=int, default=10000)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=10000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(measure(args.method, args.data_dir, args.rows)))
        return
    results = []
    for method, rows in (("ours", 10000), ("naive", args.naive_rows)):
        cmd = [sys.executable, __file__, f"--data_dir={args.data_dir}", f"--method={method}", f"--rows={rows}"]
        results.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))
        print({k: v for k, v in results[-1].items() if k != "nearest"}, file=sys.stderr, flush=True)
    n = min(r["rows"] for r in results)
    agree = sum(x == y for x, y in zip(results[0]["nearest"][:n], results[1]["nearest"][:n])) / n
    knn = subprocess.run(
        [sys.executable, str(ROOT / "fashion_trainer.py"), "knn", f"--data_dir={args.data_dir}"], capture_output=True, text=True, check=True
    )
    print(f"\nnearest neighbour agrees on {100 * agree:.2f}% of {n} test images (float32 rounding decides near-ties)\n")
    print("| method | test rows × train rows | seconds | extra peak memory |")
    print("| --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['method']} | {r['rows']} × 25000 | {r['seconds']:.1f} | {r['extra_peak_mib']:.0f} MiB |")
    print(f"\n`knn --k=3`: {knn.stdout.strip()}")


if __name__ == "__main__":
    main()
