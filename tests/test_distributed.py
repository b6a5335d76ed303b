"""Multi-process training: torchrun with 2 gloo processes on the CPU writes one checkpoint that evaluate accepts."""

import dataclasses
import itertools
import json
import os
import subprocess
import sys

import torch
from conftest import ROOT, ft


def test_torchrun_two_processes_train_data_parallel(tmp_path, tiny_data, capsys, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / "fashion_trainer.py")]
    args = ["train", f"--data_dir={tiny_data}", "--out=run", "--epochs=2", "--batch_size=32", "--device=cpu"]
    result = subprocess.run(command + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best.pt",
        "history.json",
        "last.prev.pt",
        "last.pt",
        "training_curve.png",
    ]
    assert result.stdout.count("best checkpoint:") == 1 and "2 processes (DDP)" in result.stderr  # only rank 0 speaks
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["config"]["world"] == 2 and len(history["epochs"]) == 2
    assert len(history["steps"]) == 2 * 6  # global batches of 32 (16 per rank) over 190 images
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state["state_dict"])  # the plain model's weights, not DDP's wrapper
    code = ft.main(["evaluate", str(tmp_path / "run" / "best.pt"), f"--data_dir={tiny_data}"])
    assert code == 0
    accuracy = float(capsys.readouterr().out.split("Test accuracy: ")[1].split("%")[0])
    assert accuracy >= 60  # the bars of the tiny data were learned across the two processes (chance: 10 %)


def test_each_process_warps_its_share_of_every_global_batch_as_one_process_warps_it():
    torch.manual_seed(0)
    x, y = torch.rand(23, 1, 28, 28), torch.arange(23) % 10
    config = ft.TrainConfig(batch_size=5).resolved()
    model_config = dataclasses.replace(ft.DATASETS["corruptedmnist"].model_config, input_shape=(1, 28, 28), num_classes=10)
    order = torch.randperm(23)

    spans = list(itertools.pairwise([*ft.batch_starts(23, 5, world=2), 23]))  # the last 3 images join the batch before

    def batches(rank: int, world: int) -> list:
        state = ft.TrainingState(config, model_config, torch.device("cpu"), ft.Ranks())  # the same random stream for each
        return ft.training_batches(state, config, (x, y, None), order, spans, ft.Ranks(rank, world))

    alone, first, second = batches(0, 1), batches(0, 2), batches(1, 2)
    for whole, mine, theirs in zip(alone, first, second, strict=True):  # every global batch split between the two
        assert torch.equal(mine[0], whole[0][0::2]) and torch.equal(theirs[0], whole[0][1::2])  # warped alike
        assert torch.equal(mine[1], whole[1][0::2]) and torch.equal(theirs[1], whole[1][1::2])
