"""What one training step costs on this CPU, beside the course's reference model, natively and as an AVX2 laptop runs it.

Usage: python benchmarks/bench_step.py [--steps=15] [--compile]

Times the default corrupted-MNIST network's training step (forward, backward, AdamW; batch 128, as `train` builds it:
TrainingState's model, memory layout and autocast) on random digits, and the course's reference model (Adam 1e-3,
batch 32, fp32) in the same process, their timed rounds interleaved: natively, and with oneDNN and ATen held to AVX2
(`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`, which most laptops have, without bf16). Model steps only: no
augmentation, validation or saving. Prints seconds per 25,000-digit epoch and the ratio to the reference; --compile
adds `train --compile` natively, its first step (which compiles, with an empty cache) reported apart.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
EPOCH = 25_000  # training digits of a corrupted-MNIST epoch


def seconds_per_step(steps: dict, calls: dict) -> dict:
    """Per name, the first call's seconds and the best of five rounds of calls[name] calls, after five warm-up calls; the
    rounds of all the names interleave, so this virtual machine's speed swings hit them alike."""
    first, best = {}, dict.fromkeys(steps, float("inf"))
    for name, step in steps.items():
        started = time.perf_counter()
        step()
        first[name] = time.perf_counter() - started
        for _ in range(5):
            step()
    for _ in range(5):
        for name, step in steps.items():
            started = time.perf_counter()
            for _ in range(calls[name]):
                step()
            best[name] = min(best[name], (time.perf_counter() - started) / calls[name])
    return {name: (first[name], best[name]) for name in steps}


def measure(precision: str, compile: bool, steps: int) -> dict:
    """In this process: our step (eager, and compiled if asked) and the reference's, as seconds per epoch."""
    import torch
    import torch.nn.functional as F
    from bench_corrupted_mnist import course_reference_model

    import fashion_trainer as ft

    torch.manual_seed(0)
    spec = ft.DATASETS[ft.DEFAULT_DATASET]
    config = ft.TrainConfig(precision=precision, compile=compile).resolved()
    state = ft.TrainingState(config, spec.model_config, torch.device("cpu"), ft.Ranks())
    state.model.train()
    x = torch.rand(config.batch_size, 1, 28, 28).contiguous(memory_format=state.memory_format)
    y = torch.randint(0, 10, (config.batch_size,))

    def ours(net):
        def step():
            with ft.autocast(state.device, state.amp):
                loss = F.cross_entropy(net(x).float(), y)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.optimizer.step()

        return step

    reference = course_reference_model()
    adam = torch.optim.Adam(reference.parameters(), lr=1e-3)
    x_ref, y_ref = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))

    def theirs():
        loss = F.cross_entropy(reference(x_ref), y_ref)
        adam.zero_grad()
        loss.backward()
        adam.step()

    fns = {"eager": ours(state.model), "reference": theirs} | ({"compiled": ours(state.net)} if compile else {})
    timed = seconds_per_step(fns, {"eager": steps, "compiled": steps, "reference": 4 * steps})
    per_epoch = {name: step * EPOCH / (32 if name == "reference" else config.batch_size) for name, (_, step) in timed.items()}
    return {"precision": "bf16" if state.amp is not None else "fp32", "epoch_s": per_epoch} | (
        {"compile_first_step_s": timed["compiled"][0]} if compile else {}
    )


def main() -> None:
    """Run every configuration in its own process and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15, help="steps per timed round (the reference takes 4x as many)")
    parser.add_argument("--compile", action="store_true", help="also time train --compile")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # precision,compile: one measurement, printed as JSON
    args = parser.parse_args()
    if args.worker:
        precision, compile = args.worker.split(",")
        print(json.dumps(measure(precision, compile == "True", args.steps)))
        return
    import torch
    from bench_corrupted_mnist import machine

    import fashion_trainer as ft

    native = ("bf16", "fp32") if ft.autocast_dtype(torch.device("cpu"), "auto") is not None else ("fp32",)
    rows = []
    for isa, env in (("native", {}), ("AVX2", AVX2)):
        for precision in native if isa == "native" else ("fp32",):
            # compiled only natively: under the AVX2 variables Inductor's generated code failed (an index of 2**32 - 1)
            compile = args.compile and isa == "native"
            worker = [sys.executable, __file__, f"--worker={precision},{compile}", f"--steps={args.steps}"]
            with tempfile.TemporaryDirectory() as cache:  # an empty Inductor cache: the compile a user's first run waits for
                env = {**os.environ, **env, "TORCHINDUCTOR_CACHE_DIR": cache}
                out = subprocess.run(worker, env=env, capture_output=True, text=True, check=True).stdout
            rows.append({"isa": isa, **json.loads(out.splitlines()[-1])})
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"\nMachine: {machine()}\n")
    print("| instructions | precision | s an epoch | compiled (first step) | reference s an epoch | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        epoch = r["epoch_s"]
        compiled = f"{epoch['compiled']:.1f} ({r['compile_first_step_s']:.0f} s)" if "compiled" in epoch else "—"
        print(
            f"| {r['isa']} | {r['precision']} | {epoch['eager']:.1f} | {compiled} | {epoch['reference']:.1f} | "
            f"{epoch['eager'] / epoch['reference']:.2f}× |"
        )


if __name__ == "__main__":
    main()
