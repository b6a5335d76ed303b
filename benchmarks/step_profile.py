"""What a steady training step costs: operations launched per step, the device's busy share, ms per step, images/s.

Usage: python benchmarks/step_profile.py [--device=auto] [--precision=auto] [--data_dir=DIR] [--epochs=2] [--compile]

Runs `train_epoch` as `train` does (the default corrupted-MNIST recipe: warps, the step, the moving average) over
whole epochs of the data (default: the bundled sample) and reports the last epoch. On CUDA the profiler counts the
kernels launched per step and the GPU's busy time; elsewhere a dispatch-mode counter counts the operations each step
dispatches (each one a kernel launch on a GPU): the proxy for launches where no GPU is at hand (#35). Prints one JSON
line. Works on earlier commits too (it calls only what `train` calls), so a change can be measured against its parent.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fashion_trainer as ft  # noqa: E402


class CountDispatches(TorchDispatchMode):
    """Counts every ATen operation dispatched while it is active."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--data_dir", default=str(ft.SAMPLE_DATA_DIR))
    parser.add_argument("--epochs", type=int, default=2, help="epochs run before the one measured")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    device = ft.pick_device(args.device)
    config = ft.TrainConfig(device=args.device, precision=args.precision, compile=args.compile).resolved()
    data = ft.read_dataset(config.dataset, Path(args.data_dir))
    torch.manual_seed(0)
    train, _, model_config = ft.split_for_training(data, config, device, ft.DATASETS[config.dataset].model_config)
    state = ft.TrainingState(config, model_config, device, ft.Ranks())
    steps = len(ft.batch_starts(len(train[0]), config.batch_size))

    def epoch() -> float:
        """One epoch at a fixed share of the run; its seconds (the device synchronised)."""
        started = time.perf_counter()
        losses, _ = ft.train_epoch(state, config, train[0], train[1], ft.Ranks(), lambda i: 0.5, train[2])
        sum(losses) if isinstance(losses, list) else float(losses.sum())  # waits for the device (earlier code: a tensor)
        return time.perf_counter() - started

    for _ in range(args.epochs):  # warm-up: compiling, cuDNN's first choices, the allocator's pools
        epoch()
    seconds = epoch()
    result = {"device": str(device), "precision": ft.precision_name(state.amp), "compile": args.compile, "steps": steps}
    result |= {"ms_per_step": round(1000 * seconds / steps, 2), "images_per_s": round(len(train[0]) / seconds)}
    if device.type == "cuda":
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
            epoch()
        events = prof.key_averages()
        launches = sum(
            e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC")
        )
        graphs = sum(e.count for e in events if e.key == "cudaGraphLaunch")
        busy = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA) / 1e6
        result |= {"launches_per_step": round((launches + graphs) / steps, 1), "gpu_busy_share": round(busy / seconds, 3)}
    else:
        with CountDispatches() as counter:
            epoch()
        result |= {"dispatches_per_step": round(counter.count / steps, 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
