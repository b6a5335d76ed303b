"""Resume anywhere: every state that a kill, a move to another device or process count, or a budget leaves behind is
continued, or refused in one line before any data is read."""

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, assert_one_line_error, ctrl_c_at_step, ft, weights_hash, write_course_npz

ARGS = ("--epochs=3", "--batch_size=32", "--device=cpu")  # runs compared bit for bit: on the CPU


def _files(run) -> list[str]:
    return sorted(p.name for p in run.iterdir())


# ----------------------------------------------------------------------------- killed while writing


def test_killed_in_epoch_1_between_best_pt_and_last_pt_the_same_command_trains(cli, tiny_data, tmp_path):
    assert cli("train", f"--data_dir={tiny_data}", "--out=whole", *ARGS)[0] == 0
    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.pt", "history.json", "training_curve.png"):  # what an older version left when killed there
        shutil.copy(tmp_path / "whole" / name, run / name)
    (run / "last.pt.tmp").write_bytes(b"half a checkpoint")
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", *ARGS)
    assert code == 0, err
    assert "holds no finished epoch's training state" in err and "starting the run again" in err
    assert [e["epoch"] for e in json.loads((run / "history.json").read_text())["epochs"]] == [1, 2, 3]
    assert "last.pt.tmp" not in _files(run)
    a, b = (torch.load(tmp_path / n / "best.pt", weights_only=True)["state_dict"] for n in ("whole", "run"))
    assert weights_hash(a) == weights_hash(b)


def test_a_first_epoch_leftover_of_other_settings_is_still_refused(cli, tiny_data, tmp_path):
    assert cli("train", f"--data_dir={tiny_data}", "--out=whole", "--epochs=1", "--batch_size=32")[0] == 0
    (tmp_path / "run").mkdir()
    shutil.copy(tmp_path / "whole" / "best.pt", tmp_path / "run" / "best.pt")
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=1", "--batch_size=32", "--lr=1e-4")
    assert_one_line_error(code, err, "--lr=0.003, this command says 0.0001", exit_code=2)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=1", "--batch_size=32")
    assert_one_line_error(code, err, "holds no run to continue", exit_code=2)


def test_checkpoint_writes_keep_a_whole_last_pt_at_every_moment_and_best_pt_never_ahead(cli, tiny_data, tmp_path, monkeypatch):
    run, seen, events = tmp_path / "run", [], []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src, dst):
        events.append(("rename", os.path.realpath(src)))
        if (run / "last.pt").exists():
            seen.append(("before", os.path.basename(dst), (run / "last.pt").is_file()))
        real_replace(src, dst)
        if os.path.basename(dst) in ("last.pt", "last.prev.pt", "best.pt"):
            seen.append(("after", os.path.basename(dst), (run / "last.pt").is_file()))

    def fsync(fd):
        events.append(("sync", os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))))  # which file or folder
        real_fsync(fd)

    monkeypatch.setattr(ft.os, "replace", replace)
    monkeypatch.setattr(ft.os, "fsync", fsync)
    assert cli("train", f"--data_dir={tiny_data}", "--out=run", *ARGS)[0] == 0
    assert all(present for _, _, present in seen[1:])  # from the first last.pt on, a whole last.pt is always there
    order = [name for when, name, _ in seen if when == "after"]
    assert order.index("last.pt") < order.index("best.pt")  # the state first, then the best weights
    assert all(order[i - 1] == "last.pt" for i, name in enumerate(order) if name == "best.pt")
    renames = [i for i, (what, _) in enumerate(events) if what == "rename"]
    assert len(renames) >= len(order)
    for i in renames:  # each new file's own bytes reach the disk before its name does, and the folder's entry after it
        assert ("sync", events[i][1]) in events[:i] and ("sync", os.path.realpath(run)) in events[i + 1 :], events[: i + 2]


def test_killed_between_last_pt_and_best_pt_the_continued_run_keeps_the_right_best(cli, tiny_data, tmp_path, monkeypatch):
    def scores(*values):  # validation accuracies by epoch: epoch 2 is the best, epoch 3 is worse
        left = iter(values)
        monkeypatch.setattr(ft, "validate", lambda *a, **k: next(left))

    scores(0.5, 0.9, 0.5)
    assert cli("train", f"--data_dir={tiny_data}", "--out=whole", *ARGS)[0] == 0
    real = ft.save_torch

    def killed_at_best(obj, path, previous=None):
        if path.name == "best.pt" and obj["metrics"]["epoch"] == 2:
            raise KeyboardInterrupt  # killed right after last.pt of epoch 2 became whole
        real(obj, path, previous)

    scores(0.5, 0.9)
    monkeypatch.setattr(ft, "save_torch", killed_at_best)
    assert cli("train", f"--data_dir={tiny_data}", "--out=run", *ARGS)[0] == 130
    monkeypatch.setattr(ft, "save_torch", real)
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["metrics"]["epoch"] == 1
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["training_state"]["best_epoch"] == 2
    scores(0.5)
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", *ARGS)
    assert code == 0, err
    a, b = (torch.load(tmp_path / n / "best.pt", weights_only=True) for n in ("whole", "run"))
    assert a["metrics"]["epoch"] == b["metrics"]["epoch"] == 2 and weights_hash(a["state_dict"]) == weights_hash(b["state_dict"])


def test_training_data_changed_since_the_run_was_saved_is_refused(cli, tiny_data, tmp_path, monkeypatch):
    real = ctrl_c_at_step(monkeypatch, 8)
    assert cli("train", f"--data_dir={tiny_data}", "--out=run", *ARGS)[0] == 130
    monkeypatch.setattr(ft, "update_ema", real)
    write_course_npz(tiny_data, seed=9)  # other digits in the same folder
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", *ARGS)
    assert_one_line_error(code, err, "the training data changed since run was saved")


def test_sigkill_at_any_moment_continues_rather_than_restarts(tmp_path):
    import signal
    import time

    data = write_course_npz(tmp_path / "d", n_train=400, n_test=20)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cmd = [
        sys.executable,
        str(ft.ROOT / "fashion_trainer.py"),
        "train",
        f"--data_dir={data}",
        "--epochs=4",
        "--batch_size=32",
        "--device=cpu",
    ]
    subprocess.run([*cmd, f"--out={tmp_path / 'whole'}"], env=env, check=True, capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen([*cmd, f"--out={run}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / "history.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # somewhere in epoch 2, or in the middle of writing its checkpoint
    os.kill(proc.pid, signal.SIGKILL)  # no handler runs, as when Colab recycles a runtime
    proc.wait()
    done = json.loads((run / "history.json").read_text())["epochs"][-1]["epoch"]
    result = subprocess.run([*cmd, f"--out={run}"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"after epoch {done} of 4" in result.stderr  # went on from the saved epoch instead of starting over
    assert result.stderr.count("\nepoch ") + result.stderr.startswith("epoch ") == 4 - done  # trained only what was left
    assert [e["epoch"] for e in json.loads((run / "history.json").read_text())["epochs"]] == [1, 2, 3, 4]
    a, b = (torch.load(p / "last.pt", weights_only=True)["state_dict"] for p in (tmp_path / "whole", run))
    assert weights_hash(a) == weights_hash(b)


# ----------------------------------------------------------------------------- moved to another number of processes


def _torchrun(tmp_path, data, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / "fashion_trainer.py")]
    return subprocess.run(
        [*command, "train", f"--data_dir={data}", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_torchrun_run_is_finished_in_one_process_with_its_schedule_completed(cli, tmp_path):
    # 194 training images in batches of 32: two processes merge the last 2 images into the batch before (6 steps an
    # epoch), one process takes them as a step of their own (7 steps)
    data = write_course_npz(tmp_path / "d", n_train=204, n_test=20)
    args = ("--out=run", "--epochs=2", "--batch_size=32", "--device=cpu")
    result = _torchrun(tmp_path, data, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    (tmp_path / "cut").mkdir()  # the state after epoch 1 of the 2-process run, as if it had been stopped there
    shutil.copy(tmp_path / "run" / "last.prev.pt", tmp_path / "cut" / "last.pt")
    code, _, err = cli("train", f"--data_dir={data}", "--out=cut", "--epochs=2", "--batch_size=32", "--device=cpu")
    assert code == 0, err
    assert "in 2 process(es) so far and goes on in 1" in err
    last = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    lrs = [step["lr"] for step in last["training_state"]["history"]["steps"]]
    config = ft.Checkpoint.load(tmp_path / "cut" / "last.pt").train_config
    assert last["training_state"]["step"] == 6 + 7 and last["training_state"]["done"] == 1  # ended exactly, its epoch 2 in 7 steps
    expected = [ft.schedule_at(config, i / 6 / 2)[0] for i in range(6)] + [ft.schedule_at(config, (1 + i / 7) / 2)[0] for i in range(7)]
    assert lrs == pytest.approx(expected)
    assert last["train_config"]["world"] == 1


def test_a_batch_too_small_for_the_processes_is_refused_before_any_data_is_read(cli, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    code, _, err = cli("train", "--data_dir=no/such/data", "--out=run", "--batch_size=3")
    assert_one_line_error(code, err, "--batch_size=3 is shared by 2 processes", "at least 2 images", "≥ 4", exit_code=2)


# ----------------------------------------------------------------------------- moved to another kind of device


def _policy(monkeypatch, **changes) -> None:
    """Make the CPU train as another device would: AdamW's loop and contiguous weights as on MPS."""
    real = ft.DeviceUse.of
    monkeypatch.setattr(ft.DeviceUse, "of", classmethod(lambda cls, device: dataclasses.replace(real(device), **changes)))


def _cut(cli, tiny_data, monkeypatch, *flags) -> None:
    """A run in folder `cut` stopped by Ctrl-C in epoch 2 of 3 (last.pt holds epoch 1)."""
    real = ctrl_c_at_step(monkeypatch, 8)  # 6 steps an epoch
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=cut", "--epochs=3", "--batch_size=32", "--device=cpu", *flags)
    assert code == 130, err
    monkeypatch.setattr(ft, "update_ema", real)


def test_a_mac_run_continues_on_a_t4_with_fused_adamw_and_the_gradient_scaler(cli, tiny_data, tmp_path, monkeypatch):
    with monkeypatch.context() as mac:
        _policy(mac, fused_adamw=False, channels_last=False)  # as on MPS: AdamW's loop, contiguous weights
        _cut(cli, tiny_data, mac, "--precision=fp32")
    before = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert not before["training_state"]["optimizer"]["param_groups"][0].get("fused")
    with monkeypatch.context() as t4:
        t4.setattr(ft, "autocast_dtype", lambda device, precision: torch.float16)  # a T4: fp16 and a gradient scaler
        t4.setattr(ft, "autocast", lambda device, amp: contextlib.nullcontext())  # fp16 arithmetic is slow on a CPU
        code, _, err = cli("train", "--resume=cut")
    assert code == 0, err
    after = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["training_state"]
    assert after["optimizer"]["param_groups"][0]["fused"] is True  # this device's way of stepping, not the checkpoint's
    assert after["scaler"]["_growth_tracker"] > 0  # steps were taken, not skipped for inf/NaN gradients
    moved = [k for k, v in after["model"].items() if v.is_floating_point() and not torch.equal(v, before["training_state"]["model"][k])]
    assert moved


def test_a_loaded_optimizer_state_lies_where_and_as_its_weights_do():
    """A state saved by another device or layout (a Mac's contiguous weights) goes where this device's weights are, in
    their memory layout, with float32 step counters, whatever the checkpoint held."""
    saved_model = torch.nn.Conv2d(2, 4, 3)  # contiguous, as on a Mac
    saving = torch.optim.AdamW(saved_model.parameters())
    saved_model(torch.rand(1, 2, 5, 5)).sum().backward()
    saving.step()
    saved = saving.state_dict()
    for state in saved["state"].values():
        state["step"] = state["step"].double()  # a counter of another dtype
    model = torch.nn.Conv2d(2, 4, 3).to(memory_format=torch.channels_last)  # this device's layout
    optimizer = torch.optim.AdamW(model.parameters())
    ft.load_optimizer(optimizer, saved)
    state = optimizer.state[model.weight]
    assert state["exp_avg"].is_contiguous(memory_format=torch.channels_last) and state["exp_avg_sq"].stride() == model.weight.stride()
    assert state["step"].dtype == torch.float32 and state["step"].device.type == "cpu"


def test_a_gpu_run_continues_on_a_mac_unfused_with_its_state_where_its_weights_are(cli, tiny_data, tmp_path, monkeypatch):
    _cut(cli, tiny_data, monkeypatch)  # fused AdamW, as on CUDA
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["training_state"]["optimizer"]["param_groups"][0]["fused"] is True
    with monkeypatch.context() as mac:
        _policy(mac, fused_adamw=False, channels_last=False)  # as on MPS: AdamW's loop, contiguous weights
        code, _, err = cli("train", "--resume=cut")
    assert code == 0, err
    optimizer = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["training_state"]["optimizer"]
    assert not optimizer["param_groups"][0]["fused"]
    states = list(optimizer["state"].values())
    assert all(s["step"].device.type == "cpu" for s in states)
    four_d = [s["exp_avg"] for s in states if s["exp_avg"].dim() == 4]
    assert four_d and all(t.is_contiguous() for t in four_d)  # not channels-last, as the weights on a Mac


# ----------------------------------------------------------------------------- --budget


class FakeClock:
    """perf_counter for fashion_trainer.py that moves only when a training step is taken (`per_step` seconds), when a
    compiled model first runs (`compile` seconds), when a run validates (`validation` seconds) or saves an epoch
    (`saving` seconds): budgets can then be checked exactly."""

    def __init__(
        self, monkeypatch, per_step: float, compile: float = 0.0, slower_after: int = 0, validation: float = 0.0, saving: float = 0.0
    ):
        self.now, self.per_step, self.steps = 0.0, per_step, 0
        real_ema, real_validate, real_save = ft.update_ema, ft.validate, ft.RunFolder.save_epoch

        def validate(*args, **kwargs):
            self.now += validation
            return real_validate(*args, **kwargs)

        def save_epoch(*args, **kwargs):
            self.now += saving
            return real_save(*args, **kwargs)

        def step(*args, **kwargs):
            self.steps += 1
            self.now += self.per_step * (2 if slower_after and self.steps > slower_after else 1)
            real_ema(*args, **kwargs)

        class Compiled(torch.nn.Module):  # what torch.compile returns: a wrapper whose first call compiles
            def __init__(self, inner, dynamic=None):
                super().__init__()
                self.inner, self.compiled = inner, False

            def forward(self, x):
                if not self.compiled:
                    clock.now, self.compiled = clock.now + compile, True
                return self.inner(x)

        clock = self
        compiled = Compiled

        monkeypatch.setattr(ft, "update_ema", step)
        monkeypatch.setattr(ft, "validate", validate)
        monkeypatch.setattr(ft.RunFolder, "save_epoch", save_epoch)
        monkeypatch.setattr(ft.time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(torch, "compile", compiled)


def finished(run: Path) -> tuple[float, list[float], dict]:
    """The share of the run its last.pt has done, the learning rate of each step, and the history."""
    history = json.loads((run / "history.json").read_text())
    return torch.load(run / "last.pt", weights_only=True)["training_state"]["done"], [s["lr"] for s in history["steps"]], history


@pytest.mark.parametrize(
    ("batch_size", "compile", "slower_after", "validation", "saving"),
    [(64, False, 0, 0, 0), (64, True, 0, 0, 0), (32, False, 0, 0, 0), (64, False, 6, 0, 0), (64, False, 0, 2, 0), (64, False, 0, 1, 2)],
)
def test_budget_runs_end_at_the_budget_with_their_schedule_complete(
    cli, tiny_data, tmp_path, monkeypatch, batch_size, compile, slower_after, validation, saving
):
    # 190 images: 3 steps an epoch at 64, 6 at 32; a first step made 10 s slower (as compiling makes it); steps that turn
    # slower midway; validations and saves that take seconds (the last ones must fit in too)
    clock = FakeClock(
        monkeypatch, per_step=1.0, compile=10.0 if compile else 0.0, slower_after=slower_after, validation=validation, saving=saving
    )
    flags = ["--compile"] if compile else []
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--budget=40", f"--batch_size={batch_size}", *flags)
    assert code == 0, err
    progress, lrs, history = finished(tmp_path / "run")
    start = 11.0 if compile else 1.0  # until the first step's end: not counted, and said
    assert f"start: {start:.1f} s to the end of the first step (not counted)" in err
    trained = clock.now - start  # the last epoch's save included
    assert 40 * 0.95 <= trained <= 40 and history["epochs"][-1]["seconds"] <= trained  # (nearly) all of it, not more
    if not slower_after and not validation and not saving:
        assert trained == 39 and len(lrs) == 40  # the steps take 97 % of it, 38.8 s: the step of its 39th second is the last
    assert progress >= 1 and history["config"]["epochs"] is None and len(history["epochs"]) >= 2
    config = ft.Checkpoint.load(tmp_path / "run" / "last.pt").train_config
    assert max(lrs) == pytest.approx(config.lr, rel=0.05) and lrs[-1] < 0.05 * config.lr  # warmed up, annealed to the end


def test_budget_says_what_an_epoch_takes_and_about_how_many_fit(cli, tiny_data, tmp_path, monkeypatch):
    FakeClock(monkeypatch, per_step=1.0)
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--budget=46", "--batch_size=64")
    assert code == 0, err
    # 3 steps an epoch at 1 s; validation and saving take no time here: 0.97 × 46 = 44.6 s, so 14.9 epochs after the
    # first step (the start); the 16th stops after 1 of its 3 steps, where the budget's share is spent
    assert "a step takes 1000 ms here, an epoch 3.0 s, so about 14.9 epochs fit in --budget=46" in err
    assert [e["step"] for e in json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]][-2:] == [45, 46]


def test_a_budget_below_one_epoch_trains_what_fits(cli, tiny_data, tmp_path, monkeypatch):
    clock = FakeClock(monkeypatch, per_step=1.0)
    code, out, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--budget=4", "--batch_size=32")
    assert code == 0, err
    progress, lrs, history = finished(tmp_path / "run")  # 0.65 of an epoch of 6 steps: the start's step and 4 seconds'
    assert len(lrs) == 5 < 6 and clock.now == 5 and progress >= 1 and history["epochs"][0]["step"] == 5
    assert out.startswith("best checkpoint: run/best.pt (epoch 1")


def test_a_budget_that_fits_under_a_quarter_of_an_epoch_is_refused_in_one_line_leaving_nothing(cli, tiny_data, tmp_path, monkeypatch):
    FakeClock(monkeypatch, per_step=1.0)  # 6 steps an epoch at 32: an epoch takes 6 s, a quarter of it 1.5 s
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--budget=1", "--batch_size=32")
    assert_one_line_error(code, err, "--budget=1 fits about 0.16 of an epoch", "at least --budget=2", exit_code=2)
    assert not (tmp_path / "run").exists()  # nothing was saved, and the folder made for it is gone again
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--budget=2", "--batch_size=32")
    assert code == 0, err


def test_a_fast_device_trains_at_most_four_times_the_datasets_epochs_on_a_budget(cli, tiny_data, tmp_path, monkeypatch):
    FakeClock(monkeypatch, per_step=0.0)
    monkeypatch.setitem(ft.DATASETS, "corruptedmnist", dataclasses.replace(ft.DATASETS["corruptedmnist"], epochs=2))
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--budget=1000", "--batch_size=32")
    assert code == 0, err
    assert "so about 8.0 epochs fit in --budget=1000 (the most a budget trains: 4× the dataset's 2)" in err
    assert len(finished(tmp_path / "run")[2]["epochs"]) == ft.TrainConfig().budget_cap * 2


@pytest.mark.parametrize(("budget", "validation"), [(40, 0.0), (38, 2.0)])
def test_budget_and_resume_keep_the_run(cli, tiny_data, tmp_path, monkeypatch, budget, validation):
    # 38 s with validations of 2 s: epoch 7's steps end at 33 s, short of the budget's 36.9 s, but after its validation
    # no step of an 8th fits: the run is finished with epoch 7, and saved as finished
    FakeClock(monkeypatch, per_step=1.0, validation=validation)
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", f"--budget={budget}", "--batch_size=64")
    assert code == 0, err
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", f"--budget={budget}", "--batch_size=64")
    assert_one_line_error(code, err, "finished run", exit_code=3)  # the same command: nothing more is trained
    assert_one_line_error(*cli("train", f"--data_dir={tiny_data}", "--budget=10", "--epochs=3")[::2], "--budget", exit_code=2)
    assert_one_line_error(*cli("train", f"--data_dir={tiny_data}", "--budget=0")[::2], "--budget", exit_code=2)


def test_a_killed_budget_run_continues_to_the_end_of_its_seconds(cli, tiny_data, tmp_path, monkeypatch):
    clock = FakeClock(monkeypatch, per_step=1.0)
    real = ctrl_c_at_step(monkeypatch, 20)  # 2 steps into epoch 7 (3 steps an epoch)
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--budget=40", "--batch_size=64")
    assert code == 130 and "holds epoch 6" in err, err
    monkeypatch.setattr(ft, "update_ema", real)
    clock.now = 0.0  # a new runtime's clock
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--budget=40", "--batch_size=64")
    assert code == 0 and "continuing the unfinished run in run after epoch 6" in err, err
    progress, lrs, history = finished(tmp_path / "run")
    # 17 s were saved with epoch 6 (its first step was the start; the 1 s of the killed epoch is lost): after this
    # runtime's start, 22 more steps reach 0.97 × 40 = 38.8 s
    assert progress >= 1 and len(lrs) == 41 and clock.now == 23 and history["epochs"][-1]["seconds"] == 39
