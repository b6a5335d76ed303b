"""Trying settings: `compare` shows runs side by side, `lr_find` suggests a learning rate."""

import json
import math
import re

import pytest
import torch
from conftest import assert_one_line_error, ctrl_c_at_step, ft, write_course_npz


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three runs in checkpoints/ as `train` names them: two finished (one evaluated), one stopped by Ctrl-C in epoch 2."""
    root = tmp_path_factory.mktemp("compare")
    data = write_course_npz(root / "d", n_train=200, n_test=40)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("TQDM_DISABLE", "1")
        flags = [f"--data_dir={data}", "--batch_size=32", "--val_fraction=0.2", "--device=cpu"]  # the device compare shows
        assert ft.main(["train", *flags, "--epochs=2", "--out=checkpoints/first"]) == 0
        assert ft.main(["train", *flags, "--epochs=2", "--lr=0.001", "--out=checkpoints/lower"]) == 0
        assert ft.main(["evaluate", "checkpoints/lower/best.pt", f"--data_dir={data}"]) == 0
        ctrl_c_at_step(patch, 8)  # 5 steps an epoch: stopped in epoch 2
        assert ft.main(["train", *flags, "--epochs=3", "--seed=1", "--out=checkpoints/stopped"]) == 130
    return root, data


def table(out: str) -> dict[str, list[str]]:
    """compare's stdout table as {run: its cells}, split at the runs of two or more spaces."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines() if line.strip()]
    assert rows[0] == ["run", "settings that differ", "epochs", "best val", "test", "seconds", "device"], rows[0]
    return {row[0]: row[1:] for row in rows[1:]}


def test_compare_puts_every_run_side_by_side_with_what_differs(cli, runs, monkeypatch, figures, capsys):
    root, data = runs
    monkeypatch.chdir(root)
    code, out, err = cli("compare")
    assert code == 0, err
    rows = table(out)
    assert set(rows) == {"first", "lower", "stopped"}
    here = f"cpu {ft.precision_name(ft.autocast_dtype(torch.device('cpu'), 'auto'))}"
    for name, (settings, _epochs, best_val, _test, seconds, device) in rows.items():
        history = json.loads((root / "checkpoints" / name / "history.json").read_text())
        config = history["config"]
        assert settings == f"epochs={config['epochs']}, lr={config['lr']}, seed={config['seed']}"  # batch_size etc. are shared
        assert best_val == f"{100 * history['best']['val_accuracy']:.2f}%"  # what best.pt holds: a tie goes to the later epoch
        assert seconds == f"{history['epochs'][-1]['seconds']:.0f}" and device == here
    assert rows["stopped"][1] == "1/3 unfinished" and rows["first"][1] == "2/2"
    # the test accuracy is evaluate's own result line, and only where evaluate was run
    evaluated = root / "checkpoints" / "lower" / "best.pt"
    assert ft.main(["evaluate", str(evaluated), f"--data_dir={data}"]) == 0
    said = re.search(r"Test accuracy: ([\d.]+%)", capsys.readouterr().out).group(1)
    assert rows["lower"][3] == said and rows["first"][3] == "-"
    # the picture: one line per run and panel, its points the history's, labelled by what differs, unfinished dashed
    accuracy, loss = figures[0].axes[:2]
    labels = [line.get_label() for line in accuracy.lines]
    assert labels == ["epochs=2, lr=0.003, seed=0", "epochs=2, lr=0.001, seed=0", "epochs=3, lr=0.003, seed=1 (unfinished)"]
    for name, acc_line, loss_line in zip(sorted(rows), accuracy.lines, loss.lines):
        epochs = json.loads((root / "checkpoints" / name / "history.json").read_text())["epochs"]
        assert list(acc_line.get_ydata()) == pytest.approx([100 * e["val_accuracy"] for e in epochs])
        assert list(loss_line.get_ydata()) == pytest.approx([e["train_loss"] for e in epochs])
        assert acc_line.get_linestyle() == ("--" if "unfinished" in acc_line.get_label() else "-")
    assert (root / "checkpoints" / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_leaves_out_what_is_no_run_and_says_so(cli, runs, monkeypatch, tmp_path):
    root, _ = runs
    (tmp_path / "empty").mkdir()
    code, out, err = cli("compare", root / "checkpoints" / "first", tmp_path / "empty", "--plot=c.png")
    assert code == 0 and set(table(out)) == {"first"}
    assert f"note: {tmp_path / 'empty'} is no run folder" in err and (tmp_path / "c.png").is_file()
    code, _, err = cli("compare", root / "checkpoints" / "first", "--plot=pictures/runs/c.png")  # a folder made for it
    assert code == 0 and (tmp_path / "pictures" / "runs" / "c.png").is_file(), err
    code, out, err = cli("compare", tmp_path / "empty", tmp_path / "nowhere")
    assert_one_line_error(code, err, "no run to compare")
    code, out, err = cli("compare")  # no checkpoints/ here at all
    assert_one_line_error(code, err, "no run to compare", "checkpoints/")


def test_a_test_result_of_other_data_or_an_older_best_pt_is_said_so():
    history = {"data": {"test": "abc"}, "best": {"epoch": 3}, "epochs": [{"epoch": 3, "val_accuracy": 0.9}]}
    assert ft.tested_accuracy({"accuracy": 0.9512, "test": "abc", "epoch": 3}, history) == "95.12%"
    assert ft.tested_accuracy({"accuracy": 0.9512, "test": "xyz", "epoch": 3}, history) == "95.12% (other test data)"
    assert ft.tested_accuracy({"accuracy": 0.9512, "test": "abc", "epoch": 2}, history) == "95.12% (epoch 2)"


def test_lr_find_sweeps_with_trains_step_and_suggests_a_tenth_of_the_lowest_loss(cli, tiny_data, tmp_path, figures, monkeypatch):
    steps = []
    real = ft.train_step
    monkeypatch.setattr(ft, "train_step", lambda *a, **k: steps.append(a[-1] if len(a) == 5 else k) or real(*a, **k))
    code, out, err = cli("lr_find", f"--data_dir={tiny_data}", "--batch_size=32", "--steps=40", "--start_lr=1e-4", "--end_lr=1")
    assert code == 0, err
    expected = [1e-4 * 1e4 ** (i / 39) for i in range(40)][: len(steps)]
    assert steps == pytest.approx(expected)  # train's own step, at exponentially rising learning rates
    curve = figures[0].axes[0].lines[0]
    lrs, losses = list(curve.get_xdata()), list(curve.get_ydata())
    assert lrs == pytest.approx(expected) and len(losses) == len(steps)
    lowest = min(range(len(losses)), key=losses.__getitem__)
    suggested = float(re.fullmatch(r"suggested --lr=(\S+) \(the default for corruptedmnist is 0.003\)\n", out).group(1))
    assert suggested == pytest.approx(lrs[lowest] / 10, rel=0.05) and lowest > 0
    assert losses[lowest] < 0.8 * losses[0]  # it learned on the way up
    assert len(list((tmp_path / "checkpoints").glob("lr_find-corruptedmnist-data_dir*-batch_size32.png"))) == 1


def test_lr_find_stops_where_the_loss_blows_up(cli, tiny_data, figures):
    code, _out, err = cli("lr_find", f"--data_dir={tiny_data}", "--batch_size=32", "--steps=60", "--start_lr=1e-3", "--end_lr=1e6")
    assert code == 0, err
    losses = list(figures[0].axes[0].lines[0].get_ydata())
    assert 10 < len(losses) < 60 and all(loss <= 4 * min(losses) for loss in losses[:-1])
    assert math.isfinite(losses[-1]) and losses[-1] > 4 * min(losses)  # measured: 9.3 after a lowest 1.6, 26 steps in


def test_the_suggestion_is_a_tenth_of_the_lowest_smoothed_loss_or_none():
    lrs = [10.0**e for e in range(-5, 1)]
    assert ft.suggest_lr(lrs, [2.0, 1.5, 1.0, 0.7, 1.2, 9.0]) == pytest.approx(1e-3)
    assert ft.suggest_lr(lrs, [2.0, 2.1, 2.5, 3.0, 5.0, 9.0]) is None  # never fell


def test_lr_find_refuses_what_it_cannot_use(cli, tiny_data, monkeypatch):
    assert_one_line_error(*cli("lr_find", f"--data_dir={tiny_data}", "--steps=3")[::2], "--steps", exit_code=2)
    assert_one_line_error(*cli("lr_find", f"--data_dir={tiny_data}", "--epochs=3")[::2], "unknown flag --epochs", exit_code=2)
    assert_one_line_error(*cli("lr_find", f"--data_dir={tiny_data}", "--end_lr=1e-6")[::2], "--end_lr", exit_code=2)
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun every process would write the same picture
    assert_one_line_error(*cli("lr_find", f"--data_dir={tiny_data}")[::2], "not torchrun", exit_code=2)


def test_lr_find_says_so_where_the_loss_never_fell(cli, tiny_data, tmp_path):
    code, _, err = cli(
        "lr_find", f"--data_dir={tiny_data}", "--batch_size=32", "--steps=20", "--start_lr=100", "--end_lr=1e6", "--plot=p.png"
    )
    assert_one_line_error(code, err, "the loss never fell between --start_lr=100", "plot: p.png")
    assert (tmp_path / "p.png").is_file()  # the curve that shows why
