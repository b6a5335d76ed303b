"""Training: the run folder's files, history format, determinism, early stopping, NaN loss, scheduler and flags."""

import dataclasses
import itertools
import json
import sys

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, ctrl_c_at_step, digit_images, ft, write_course_npz

FAST = ("--epochs=2", "--batch_size=32", "--augment=False")


def test_train_writes_checkpoints_history_and_plot(cli, tiny_data, tmp_path):
    code, out, err = cli("train", f"--data_dir={tiny_data}", "--out=run", *FAST, "--device=cpu")
    assert code == 0, err
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "history.json", "last.prev.pt", "last.pt", "training_curve.png"]
    assert (run / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((run / "history.json").read_text())
    assert history["config"]["lr"] == 3e-3 and history["config"]["epochs"] == 2
    steps = history["steps"]
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    assert len(steps) == 2 * 6  # 190 training images (10 held out) in batches of 32
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert all(0 <= e["val_accuracy"] <= 1 and e["seconds"] > 0 for e in history["epochs"])
    last_line = out.strip().splitlines()[-1]
    assert last_line.startswith("best checkpoint: run/best.pt (epoch ") and "validation accuracy" in last_line
    here = ft.precision_name(ft.autocast_dtype(torch.device("cpu"), "auto"))
    assert all((e["device"], e["precision"]) == ("cpu", here) for e in history["epochs"])
    best = ft.Checkpoint.load(run / "best.pt").metrics["epoch"]
    assert history["best"] == {"epoch": best, "val_accuracy": history["epochs"][best - 1]["val_accuracy"]}
    assert history["data"] == ft.Checkpoint.load(run / "best.pt").data_fingerprint


def test_the_training_curve_shows_the_historys_numbers(cli, tiny_data, figures):
    """What the curve draws is history.json's: every step's loss at its step, each epoch's validation accuracy (in %)
    at the step it ended on, and after 20 steps their running mean."""
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=4", "--batch_size=32", "--augment=False")
    assert code == 0, err
    history = json.loads((ft.Path("run") / "history.json").read_text())
    loss, accuracy = figures[-1].axes
    per_step, mean = loss.lines
    assert list(per_step.get_xdata()) == [s["step"] for s in history["steps"]]
    assert list(per_step.get_ydata()) == pytest.approx([s["loss"] for s in history["steps"]])
    assert len(history["steps"]) == 24 and mean.get_label() == "training loss (1-step mean)"  # 24 steps: k = 24 // 50 → 1
    ends, shown = list(accuracy.lines[0].get_xdata()), list(accuracy.lines[0].get_ydata())
    assert ends == [6, 12, 18, 24] and shown == pytest.approx([100 * e["val_accuracy"] for e in history["epochs"]])


def test_the_same_train_command_without_out_continues_its_run_and_a_changed_one_trains_another(cli, tiny_data, tmp_path, monkeypatch):
    args = (f"--data_dir={tiny_data}", "--epochs=2", "--batch_size=32")
    real = ctrl_c_at_step(monkeypatch, 8)  # in epoch 2 (6 steps an epoch)
    assert cli("train", *args)[0] == 130
    monkeypatch.setattr(ft, "update_ema", real)
    name = ft.run_name([f"--data_dir={tiny_data}", "--dataset=corruptedmnist", "--epochs=2", "--batch_size=32"])  # the notebook's
    assert name.startswith("corruptedmnist-data_dir") and name.endswith("-epochs2-batch_size32")
    code, out, err = cli("train", *args, "--device=cpu")  # where it runs is not part of the run's name
    assert code == 0 and f"continuing the unfinished run in checkpoints/{name} after epoch 1 of 2" in err, err
    assert out.startswith(f"best checkpoint: checkpoints/{name}/best.pt")
    code, _, err = cli("train", *args)
    assert_one_line_error(code, err, f"checkpoints/{name} holds a finished run", f"evaluate checkpoints/{name}/best.pt", exit_code=3)
    code, out, err = cli("train", *args, "--if_unfinished")  # the notebook's way: said calmly
    assert code == 0 and "error" not in err and out.count("\n") == 1, out + err
    assert f"checkpoints/{name} holds a finished run (epoch 2 of 2" in out and "nothing was trained, these are its results" in out
    assert cli("train", *args, "--seed=1")[0] == 0  # a changed setting is another run
    runs = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert runs == sorted([name, f"{name}-seed1"]) and all((tmp_path / "checkpoints" / r / "best.pt").is_file() for r in runs)


def test_existing_out_folder_is_never_overwritten(cli, tiny_data, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.pt").write_bytes(b"precious")
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", *FAST)
    assert_one_line_error(code, err, "already exists", exit_code=2)
    assert (tmp_path / "run" / "best.pt").read_bytes() == b"precious"


@pytest.mark.parametrize("batch_size", [32, 7])
def test_every_training_image_is_trained_on_once_an_epoch_in_blocks_of_batches(cli, tiny_data, monkeypatch, batch_size):
    seen, real = [], ft.train_step
    monkeypatch.setattr(
        ft, "train_step", lambda state, config, x, y, *a: seen.append((x.clone(), y.clone())) or real(state, config, x, y, *a)
    )
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=1", f"--batch_size={batch_size}", "--augment=False")
    assert code == 0, err
    data = ft.read_corrupted_mnist(tiny_data)
    train_idx, _ = ft.split_validation(len(data.train_images), 0.05, 0)
    # 190 images: 5 batches of 32 and the last of 30; at 7, 27 batches (two blocks of 16 and 11), the last one of 1 merged
    assert [len(y) for _, y in seen] == ([32] * 5 + [30] if batch_size == 32 else [7] * 26 + [8])
    trained = torch.cat([x for x, _ in seen]).flatten(1)
    expected = data.train_images[train_idx].flatten(1)
    assert sorted(map(tuple, trained.tolist())) == sorted(map(tuple, expected.tolist()))  # every image once, none twice


def test_same_seed_same_history_on_cpu(cli, tiny_data, tmp_path):
    for name in ("a", "b"):
        assert cli("train", f"--data_dir={tiny_data}", f"--out={name}", "--seed=3", "--epochs=2", "--batch_size=32", "--device=cpu")[0] == 0
    a, b = (json.loads((tmp_path / n / "history.json").read_text()) for n in "ab")
    assert a["steps"] == b["steps"]
    assert [e["val_accuracy"] for e in a["epochs"]] == [e["val_accuracy"] for e in b["epochs"]]
    wa, wb = (torch.load(tmp_path / n / "last.pt", weights_only=True)["state_dict"] for n in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert cli("train", f"--data_dir={tiny_data}", "--out=c", "--seed=4", "--epochs=2", "--batch_size=32")[0] == 0
    c = json.loads((tmp_path / "c" / "history.json").read_text())
    assert c["steps"] != a["steps"]


def test_learns_an_easy_task(cli, tmp_path):
    data = write_course_npz(tmp_path / "d", n_train=600, n_test=100, shards=3)
    code, _, err = cli("train", f"--data_dir={data}", "--out=run", "--epochs=6", "--batch_size=32", "--val_fraction=0.1", "--augment=False")
    assert code == 0, err
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert max(e["val_accuracy"] for e in history["epochs"]) > 0.9
    code, out, _ = cli("evaluate", "run/best.pt", f"--data_dir={data}")
    assert code == 0 and float(out.split(":")[1].split("%")[0]) > 90


def test_a_large_batch_short_run_is_validated_with_its_own_batch_statistics(cli, tiny_data, tmp_path):
    # 3 steps an epoch: the running batch-norm averages lag the weights (and the EMA averages them again); validated
    # with them, such a run scored chance (the sample with --batch_size=1024: 9 %)
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=6", "--batch_size=64")
    assert code == 0, err
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert max(e["val_accuracy"] for e in history["epochs"]) >= 0.6, history["epochs"]
    code, out, err = cli("evaluate", "run/best.pt", f"--data_dir={tiny_data}")  # and on all 50 test images (measured 88-98 %)
    assert code == 0 and float(out.split("Test accuracy: ")[1].split("%")[0]) >= 80, out + err


def test_early_stopping_keeps_the_best_checkpoint(cli, tiny_data, tmp_path, monkeypatch):
    scores = iter([0.5, 0.9, 0.6, 0.6, 0.6, 0.95])
    monkeypatch.setattr(ft, "validate", lambda *a, **k: next(scores))
    drawn, draw = [], ft.plot_training_curve
    monkeypatch.setattr(ft, "plot_training_curve", lambda history, path: drawn.append(len(history["epochs"])) or draw(history, path))
    code, out, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=6", "--patience=2", "--batch_size=64")
    assert code == 0, err
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3, 4]  # stopped 2 epochs after the best
    assert "early stop" in err
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert best["metrics"]["epoch"] == 2 and best["metrics"]["val_accuracy"] == 0.9 and last["metrics"]["epoch"] == 4
    assert "epoch 2" in out and "90.00%" in out
    assert drawn[-1] == 4  # the curve shows the epoch it stopped after


def test_the_curve_is_redrawn_every_epoch_unless_drawing_would_take_a_tenth_of_the_run(monkeypatch, tmp_path):
    clock, drawn = [0.0], []

    def plot(history, path):
        drawn.append(len(history["epochs"]))
        clock[0] += 0.3  # a drawing's seconds

    monkeypatch.setattr(ft.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(ft, "plot_training_curve", plot)
    for epoch_seconds, expected in ((5.0, list(range(1, 11))), (0.5, [1, 7, 10])):
        drawn.clear()
        curve, history = ft.CurveRedraws(), {"epochs": []}
        for epoch in range(1, 11):
            history["epochs"].append({})
            clock[0] += epoch_seconds
            curve.draw(history, tmp_path / "curve.png", final=epoch == 10)
        curve.draw(history, tmp_path / "curve.png", final=True)  # the end of the run: already drawn
        assert drawn == expected  # short epochs: a drawing when 3 s (10 drawings) have passed, and the last epoch's


def test_scores_within_one_standard_error_are_a_tie_that_the_later_epoch_wins(cli, tiny_data, tmp_path, monkeypatch):
    assert abs(ft.tie_margin(0.99, 1250) - 0.0028) < 1e-4  # 3.5 of 1,250 validation digits
    assert abs(ft.tie_margin(0.92, 10) - 0.0858) < 1e-4  # the 10 validation images of tiny_data
    scores = iter([0.5, 0.92, 0.85, 0.6, 0.80])  # 0.85 is within 0.0858 of 0.92: a tie; 0.80 is not
    monkeypatch.setattr(ft, "validate", lambda *a, **k: next(scores))
    code, out, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=5", "--batch_size=64")
    assert code == 0, err
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["metrics"]["epoch"] == 3 and best["metrics"]["best_val_accuracy"] == 0.92
    assert "epoch 3, validation accuracy 85.00%" in out


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(cli, tiny_data, tmp_path, monkeypatch):
    real_fit_loss = ft.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real_fit_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 6 else loss

    monkeypatch.setattr(ft.F, "cross_entropy", poisoned)
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", *FAST)
    assert_one_line_error(code, err, "NaN", "--lr", "best.pt")
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["metrics"]["epoch"] == 1 and all(torch.isfinite(v).all() for v in best["state_dict"].values() if v.is_floating_point())


@pytest.mark.parametrize("scheduler", ft.SCHEDULERS)
def test_every_scheduler_follows_its_shape_over_the_share_of_the_run_done(scheduler):
    config = ft.TrainConfig(lr=0.1, scheduler=scheduler).resolved()
    lrs, betas = zip(*(ft.schedule_at(config, i / 30) for i in range(31)))
    if scheduler == "none":
        assert lrs == (0.1,) * 31 and set(betas) == {None}
    elif scheduler == "onecycle":  # from lr/25 up to the peak at a quarter of the run, then down to lr/25e4; beta1 against it
        assert lrs[0] == pytest.approx(0.1 / 25) and lrs[-1] == pytest.approx(0.1 / 25e4) and ft.schedule_at(config, 0.25)[0] == 0.1
        assert all(a < b for a, b in itertools.pairwise(lrs[:8])) and all(a > b for a, b in itertools.pairwise(lrs[8:]))
        assert (
            betas[0] == pytest.approx(0.95) and ft.schedule_at(config, 0.25)[1] == pytest.approx(0.85) and betas[-1] == pytest.approx(0.95)
        )
    elif scheduler == "cosine":
        assert lrs[0] == 0.1 and all(a > b for a, b in itertools.pairwise(lrs)) and lrs[-1] < 1e-9
    else:  # step: a tenth every third of the run
        assert lrs[9] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.01) and lrs[20] == pytest.approx(0.001) == lrs[30]


def test_each_step_trains_at_the_schedules_learning_rate_and_history_records_it(cli, tiny_data, tmp_path):
    assert cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=2", "--batch_size=32", "--scheduler=cosine")[0] == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    config = ft.Checkpoint.load(tmp_path / "run" / "last.pt").train_config
    assert [s["lr"] for s in history["steps"]] == pytest.approx([ft.schedule_at(config, i / 12)[0] for i in range(12)])  # 6 an epoch


def test_validation_split_is_disjoint_seeded_and_sized():
    train, val = ft.split_validation(100, 0.1, seed=1)
    assert len(val) == 10 and len(train) == 90 and set(train.tolist()).isdisjoint(val.tolist())
    assert torch.equal(val, ft.split_validation(100, 0.1, seed=1)[1])


def test_augmentation_is_seeded_and_batched():
    x = torch.rand(8, 1, 28, 28)
    rand = torch.rand(8, 10, generator=torch.Generator().manual_seed(0)) * 2 - 1
    recipe = ft.Augmentation(degrees=10, shift=0.1, scale=0.1, mirror=True)
    a = ft.augment_batch(x, rand, recipe)
    assert a.shape == x.shape and torch.equal(a, ft.augment_batch(x, rand.clone(), recipe)) and not torch.equal(a, x)


def test_slant_stretch_and_cutout_augmentation():
    x = torch.ones(4, 1, 28, 28)
    rand = torch.zeros(4, 10)
    rand[:, 7:9] = torch.tensor([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # square centres: corners, middle, edge
    recipe = ft.Augmentation(degrees=10, shift=0.1, scale=0.1)
    plain = ft.augment_batch(x, rand, recipe)
    blanked = ft.augment_batch(x, rand, dataclasses.replace(recipe, cutout=9))
    holes = (blanked == 0) & (plain != 0)
    assert holes[1].sum() == 81 and holes[1, 0, 10:19, 10:19].all()  # a 9 × 9 square in the middle
    assert holes[0].sum() == 25 and holes[0, 0, :5, :5].all()  # clipped at the corner
    rand[:, 5:7] = torch.tensor([1.0, 1.0])
    slanted = ft.augment_batch(x, rand, dataclasses.replace(recipe, slant=0.3, stretch=0.15))
    assert not torch.allclose(slanted, plain)


def test_ink_orientation_turns_twice_as_far_as_the_image_and_shards_are_told_apart():
    bars = torch.zeros(12, 1, 28, 28)
    for i in range(12):
        bars[i, 0, 4:24, 12 + i % 3 : 14 + i % 3] = 1.0  # upright strokes, slightly apart
    z0 = ft.ink_orientation(bars)
    turned = ft.rotate_all(bars, torch.full((12,), 30.0))
    assert torch.allclose(torch.rad2deg(torch.angle(ft.ink_orientation(turned) / z0)), torch.full((12,), 60.0), atol=3)
    labels = torch.arange(12) % 10
    images = torch.cat([bars, turned, ft.rotate_all(bars, torch.full((12,), -20.0))])
    angles = ft.shard_angles(images, labels.repeat(3), torch.arange(3).repeat_interleave(12))
    assert abs(float(angles[1] - angles[0]) - 30) < 3 and abs(float(angles[2] - angles[0]) + 20) < 3
    data = ft.Data.of([(bars, labels), (turned, labels), (images[24:], labels)], (bars, labels), ft.DIGITS, "x", (1, 28, 28))
    turns = ft.upright_turns(data, torch.arange(36), ft.DATASETS["corruptedmnist"].augmentation)
    assert torch.allclose(turns, -angles.repeat_interleave(12))  # each file's measured angle undone, image by image


def test_a_nearest_share_of_the_batch_is_resampled_as_the_course_data_was():
    x = (torch.rand(6, 1, 28, 28) * 4).round() / 4  # five grey levels
    rand = torch.rand(6, 10, generator=torch.Generator().manual_seed(1)) * 2 - 1
    rand[:, 9] = torch.tensor([-1.0, -0.5, -0.1, 0.1, 0.5, 1.0])  # the first three fall in a 0.5 share
    recipe = ft.Augmentation(degrees=20, shift=0.1, scale=0.1)
    bilinear = ft.augment_batch(x, rand, recipe)
    mixed = ft.augment_batch(x, rand, dataclasses.replace(recipe, nearest=0.5))
    assert torch.equal(mixed[3:], bilinear[3:]) and not torch.equal(mixed[:3], bilinear[:3])
    assert torch.equal((mixed[:3] * 4).round(), mixed[:3] * 4)  # nearest neighbour: no blended grey levels


def test_slant_moves_the_top_of_an_upright_bar_sideways():
    bar = torch.zeros(1, 1, 28, 28)
    bar[..., 4:24, 13:15] = 1.0
    slanted = ft.affine_warp(bar, torch.zeros(1), slants=torch.tensor([0.5]))
    cols = torch.arange(28.0)
    top, bottom = (slanted[0, 0, 6] * cols).sum() / slanted[0, 0, 6].sum(), (slanted[0, 0, 21] * cols).sum() / slanted[0, 0, 21].sum()
    assert abs(top - bottom) > 4  # the bar now leans
    assert torch.allclose(
        ft.affine_warp(bar, torch.zeros(1), slants=torch.zeros(1), stretches=torch.ones(1)), ft.affine_warp(bar, torch.zeros(1))
    )


def test_mirroring_flips_left_and_right_exactly():
    x = torch.rand(3, 3, 32, 32)
    mirrored = ft.affine_warp(x, torch.zeros(3), mirror=torch.tensor([True, False, True]))
    assert torch.allclose(mirrored[0], x[0].flip(-1), atol=1e-5) and torch.allclose(mirrored[1], x[1], atol=1e-5)


@pytest.mark.parametrize(
    ("flag", "fragment"),
    [
        ("--lr=0", "--lr"),
        ("--lr=-1e-3", "--lr"),
        ("--lr=abc", "--lr"),
        ("--epochs=0", "--epochs"),
        ("--epochs=2.5", "--epochs"),
        ("--batch_size=0", "--batch_size"),
        ("--val_fraction=0", "--val_fraction"),
        ("--val_fraction=1", "--val_fraction"),
        ("--patience=-1", "--patience"),
        ("--seed=-3", "--seed"),
        ("--scheduler=linear", "onecycle"),
        ("--device=tpu", "--device"),
        ("--label_smoothing=1.5", "--label_smoothing"),
        ("--augment_degrees=400", "--augment_degrees"),
        ("--precision=half", "--precision"),
        ("--ema=1", "--ema"),
        ("--precision=fp16", "needs a GPU"),
    ],
)
def test_bad_train_arguments_exit_2_with_one_line(cli, tiny_data, flag, fragment):
    code, _, err = cli("train", f"--data_dir={tiny_data}", flag)
    assert_one_line_error(code, err, fragment, exit_code=2)


def test_auto_precision_uses_bf16_on_the_cpu_only_where_it_is_native(monkeypatch):
    cpu = torch.device("cpu")
    assert ft.autocast_dtype(cpu, "fp32") is None and ft.autocast_dtype(cpu, "bf16") == torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert ft.autocast_dtype(cpu, "auto") is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert ft.autocast_dtype(cpu, "auto") == torch.bfloat16


def test_cuda_without_gpu_is_a_clear_error(cli, tiny_data, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--device=cuda")
    assert_one_line_error(code, err, "no CUDA GPU", exit_code=2)


def test_interrupted_then_resumed_run_ends_exactly_like_an_uninterrupted_one(cli, tiny_data, tmp_path, monkeypatch):
    args = (f"--data_dir={tiny_data}", "--epochs=3", "--batch_size=32", "--seed=5", "--patience=0", "--device=cpu")
    assert cli("train", *args, "--out=whole")[0] == 0
    real = ctrl_c_at_step(monkeypatch, 15)  # 6 steps an epoch
    code, _, err = cli("train", *args, "--out=cut")
    assert_one_line_error(code, err, "interrupted", "holds epoch 2", "--resume=cut/last.pt", exit_code=130)
    monkeypatch.setattr(ft, "update_ema", real)
    code, out, err = cli("train", "--resume=cut/last.pt")
    assert code == 0, err
    assert "resuming cut after epoch 2" in err and out.startswith("best checkpoint: cut/best.pt")
    whole, cut = (json.loads((tmp_path / n / "history.json").read_text()) for n in ("whole", "cut"))
    assert whole["steps"] == cut["steps"]
    assert [(e["train_loss"], e["val_accuracy"]) for e in whole["epochs"]] == [(e["train_loss"], e["val_accuracy"]) for e in cut["epochs"]]
    a, b = (torch.load(tmp_path / n / "last.pt", weights_only=True) for n in ("whole", "cut"))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert all(torch.equal(a["training_state"]["model"][k], b["training_state"]["model"][k]) for k in a["training_state"]["model"])


def test_resume_forms_and_mistakes(cli, tiny_data, tmp_path):
    assert cli("train", f"--data_dir={tiny_data}", "--epochs=1", "--out=run")[0] == 0
    code, _, err = cli("train", "--resume", "--out=run")  # already finished: said as by the same command again
    assert_one_line_error(code, err, "run holds a finished run (epoch 1 of 1", "evaluate run/best.pt", exit_code=3)
    code, out, err = cli("train", "--resume=run", "--if_unfinished")
    assert code == 0 and "nothing was trained, these are its results" in out, err
    assert_one_line_error(*cli("train", "--resume=run/best.pt")[::2], "no training state", "last.pt")
    assert_one_line_error(*cli("train", "--resume")[::2], "--resume needs the run", exit_code=2)
    assert_one_line_error(*cli("train", "--resume=nowhere/last.pt")[::2], "does not exist")


def test_sigterm_stops_like_ctrl_c(cli, tiny_data, monkeypatch):
    import os
    import signal

    def terminate(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)

    def unhandled(signum, frame):  # stands in for the default action, which would end this test process
        raise SystemExit("SIGTERM reached the default action: the run would die without a word")

    monkeypatch.setattr(ft, "update_ema", terminate)
    signal.signal(signal.SIGTERM, unhandled)
    try:
        code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=2")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert_one_line_error(code, err, "interrupted", "no epoch had finished", exit_code=130)


# ----------------------------------------------------------------------------- the three calls of a training step


def _one_batch_state():
    """A TrainingState over 64 easy images taken as one batch per epoch, without dropout or augmentation, and the data."""
    labels = np.arange(64) % 10
    x = torch.from_numpy(digit_images(labels)).float().div(255).unsqueeze(1)
    y = torch.from_numpy(labels)
    config = dataclasses.replace(ft.TrainConfig(augment=False, batch_size=64, precision="fp32").resolved(), epochs=2, ema=0.0)
    net = ft.ModelConfig(input_shape=(1, 28, 28), num_classes=10, mean=(0.1,), std=(0.3,), dropout=0.0)
    return ft.TrainingState(config, net, torch.device("cpu"), ft.Ranks()), config, x, y


def _gradients_at_each_step(state) -> list:
    """The first weight's gradient as each optimizer step finds it."""
    first, seen = next(state.model.parameters()), []
    state.optimizer.register_step_pre_hook(lambda *a: seen.append(None if first.grad is None else first.grad.clone()))
    return seen


def test_our_step_starts_every_batch_from_zero_gradients(monkeypatch):
    state, config, x, y = _one_batch_state()
    monkeypatch.setattr(ft, "schedule_at", lambda config, progress: (0.0, None))  # weights stay put: same batch, same gradient
    seen = _gradients_at_each_step(state)
    for _ in range(2):
        ft.train_epoch(state, config, x, y, ft.Ranks(), lambda i: 0.0)
    assert len(seen) == 2 and seen[0].abs().sum() > 0
    assert (seen[1] - seen[0]).norm() < 0.02 * seen[0].norm()  # without zero_grad: twice the first (a difference of 100 %)


def test_our_step_backpropagates_before_it_steps():
    state, config, x, y = _one_batch_state()
    seen = _gradients_at_each_step(state)
    ft.train_epoch(state, config, x, y, ft.Ranks(), lambda i: 0.0)
    assert seen and seen[0] is not None and seen[0].abs().sum() > 0  # without backward(): no gradient at all


def test_our_step_moves_the_weights():
    state, config, x, y = _one_batch_state()
    before = [p.detach().clone() for p in state.model.parameters()]
    ft.train_epoch(state, config, x, y, ft.Ranks(), lambda i: 0.0)
    assert all(not torch.equal(a, b) for a, b in zip(before, state.model.parameters()))  # without step(): none moves


def test_three_calls_script_measures_the_broken_variants():
    sys.path.insert(0, str(ft.ROOT / "scripts"))
    import three_calls

    curves = three_calls.loss_curves(steps=40)
    full, no_zero, no_backward, no_step = (curves[v] for v in three_calls.VARIANTS)
    assert full[-1] < 0.6 * full[0]  # learns
    assert max(no_backward) - min(no_backward) < 0.5 and max(no_step) - min(no_step) < 0.5  # the batches differ, the model does not
    assert no_backward == no_step  # identical: neither changes the weights
    assert no_zero != full and no_zero[:1] == full[:1]


def test_compile_flag_trains_through_the_compiled_model(cli, tiny_data, tmp_path, monkeypatch):
    calls = []

    class Compiled(torch.nn.Module):  # stands in for torch.compile's wrapper (Inductor itself is tested on GPUs)
        def __init__(self, inner, dynamic=None):
            super().__init__()
            self.inner = inner
            assert dynamic is False  # compiled once, for a full batch's shape

        def forward(self, x):
            calls.append(len(x))
            return self.inner(x)

    monkeypatch.setattr(torch, "compile", Compiled)
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=1", "--batch_size=32", "--compile")
    assert code == 0, err
    # 190 images: every full batch of 32 went through it; the last, of 30, runs eager (compiling its shape too was what kept
    # --compile from finishing on an H200)
    assert calls == [32] * 5
    assert_one_line_error(*cli("train", f"--data_dir={tiny_data}", "--compile=maybe")[::2], "--compile", exit_code=2)


def test_compile_without_a_compiler_is_refused_before_any_data_is_read(cli, monkeypatch):
    monkeypatch.setattr(ft.shutil, "which", lambda name: None)  # a laptop without Xcode's tools or Visual Studio's
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    code, _, err = cli("train", "--data_dir=no/such/data", "--out=run", "--compile")
    assert_one_line_error(code, err, "--compile builds its kernels with a C/C++ compiler", "leave --compile out", exit_code=2)


# ----------------------------------------------------------------------------- the same command again: continue, or refuse


def test_the_same_command_continues_an_unfinished_run_and_refuses_a_finished_one(cli, tiny_data, tmp_path, monkeypatch):
    args = ("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=3", "--batch_size=32")
    assert cli(*args[:2], "--out=whole", *args[3:])[0] == 0
    real = ctrl_c_at_step(monkeypatch, 9)
    assert cli(*args)[0] == 130
    monkeypatch.setattr(ft, "update_ema", real)
    code, _, err = cli(*args)
    assert code == 0, err
    assert "continuing the unfinished run in run after epoch 1 of 3" in err
    whole, run = (json.loads((tmp_path / n / "history.json").read_text()) for n in ("whole", "run"))
    assert [e["epoch"] for e in run["epochs"]] == [1, 2, 3] and whole["steps"] == run["steps"]
    a, b = (torch.load(tmp_path / n / "last.pt", weights_only=True)["state_dict"] for n in ("whole", "run"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    code, _, err = cli(*args)
    assert_one_line_error(code, err, "holds a finished run", "evaluate run/best.pt", "new --out", exit_code=3)
    code, _, err = cli(*args, "--lr=1e-4")
    assert_one_line_error(code, err, "--lr=0.003, this command says 0.0001", exit_code=2)


def test_a_code_update_that_changes_a_default_under_an_unfinished_run_continues_it_with_its_own(cli, tiny_data, tmp_path, monkeypatch):
    args = ("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=3", "--batch_size=32")
    real = ctrl_c_at_step(monkeypatch, 9)
    assert cli(*args)[0] == 130
    monkeypatch.setattr(ft, "update_ema", real)
    # the run was started by older code whose label smoothing and warm-up were others: its last.pt says so
    last = ft.Checkpoint.load(tmp_path / "run" / "last.pt")
    older = dataclasses.replace(last.train_config, label_smoothing=0.1, warmup_fraction=0.3)
    dataclasses.replace(last, train_config=older).save(tmp_path / "run" / "last.pt")
    code, _, err = cli(*args, "--label_smoothing=0.05")  # a flag the user gives that differs: another run
    assert_one_line_error(code, err, "--label_smoothing=0.1, this command says 0.05", exit_code=2)
    spec = ft.DATASETS["corruptedmnist"]  # the update also changed the dataset's network
    monkeypatch.setitem(ft.DATASETS, "corruptedmnist", dataclasses.replace(spec, model_config=ft.ModelConfig(hidden=64)))
    code, _, err = cli(*args)  # the same command, after the update: the run goes on with its own settings and network
    assert code == 0, err
    assert ft.Checkpoint.load(tmp_path / "run" / "best.pt").model_config == last.model_config
    assert "continuing the unfinished run in run after epoch 1 of 3" in err
    assert "keeps its own settings" in err and "--label_smoothing=0.1 (default now 0.05)" in err and "warmup_fraction" in err
    kept = ft.Checkpoint.load(tmp_path / "run" / "last.pt").train_config
    assert (kept.label_smoothing, kept.warmup_fraction, kept.epochs) == (0.1, 0.3, 3)


def test_a_damaged_last_pt_falls_back_to_the_state_before_it(cli, tiny_data, tmp_path, monkeypatch):
    args = ("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=3", "--batch_size=32")
    assert cli(*args[:2], "--out=whole", *args[3:])[0] == 0
    real = ctrl_c_at_step(monkeypatch, 15)  # in epoch 3: last.pt holds epoch 2, last.prev.pt epoch 1
    assert cli(*args)[0] == 130
    monkeypatch.setattr(ft, "update_ema", real)
    last = tmp_path / "run" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # a sync that never finished
    code, _, err = cli(*args)
    assert code == 0, err
    assert "going on from last.prev.pt" in err and "after epoch 1 of 3" in err
    a, b = (torch.load(tmp_path / n / "last.pt", weights_only=True)["state_dict"] for n in ("whole", "run"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["epoch"] for e in json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]] == [1, 2, 3]


def test_an_lr_far_from_the_recipes_is_noted_once_and_still_trains(cli, tiny_data):
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=low", "--epochs=1", "--lr=1e-4")
    assert code == 0, err
    assert err.count("note: --lr=0.0001 is 30× below the 0.003 this recipe was measured with") == 1
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=usual", "--epochs=1", "--lr=1e-3")
    assert code == 0 and "note: --lr" not in err


def test_another_lr_starts_and_decays_the_batch_normed_layers_in_proportion_to_it():
    """Batch norm makes the layers before it blind to their weights' scale, so a step turns them by lr / |w|: at 1/30 of
    the recipe's --lr the convolutions and the hidden layer start 30× smaller (the same random draw) and each step decays
    the same share of them."""
    net = dataclasses.replace(ft.DATASETS["corruptedmnist"].model_config, input_shape=(1, 28, 28), num_classes=10)
    states = {}
    for lr in (ft.DATASETS["corruptedmnist"].lr, ft.DATASETS["corruptedmnist"].lr / 30):
        torch.manual_seed(0)
        config = dataclasses.replace(ft.TrainConfig(lr=lr).resolved(), epochs=1)
        states[lr] = ft.TrainingState(config, net, torch.device("cpu"), ft.Ranks())
    usual, low = (dict(states[lr].model.named_parameters()) for lr in states)
    model = states[ft.DATASETS["corruptedmnist"].lr].model
    scaled = [
        f"{name}.weight"
        for name, m in model.named_modules()
        if isinstance(m, ft.P4Conv) or (isinstance(m, torch.nn.Linear) and m.bias is None)
    ]
    assert len(scaled) == 6 and all(torch.allclose(low[name] * 30, usual[name]) for name in scaled)
    others = [name for name in usual if name not in scaled]  # batch norm, the classifier: as they were
    assert len(others) == 14 and all(torch.equal(low[name], usual[name]) for name in others)
    decay = [s.optimizer.param_groups[0]["weight_decay"] * s.optimizer.param_groups[0]["lr"] for s in states.values()]
    assert decay[0] == pytest.approx(decay[1])
