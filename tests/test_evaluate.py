"""Evaluation: the one-line result, and every kind of bad checkpoint refused without running code."""

import dataclasses
import json
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, ft, write_course_npz


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny trained run shared by the tests here."""
    root = tmp_path_factory.mktemp("trained")
    data = write_course_npz(root / "d", n_train=300, n_test=60, shards=3)
    ft.main(["train", f"--data_dir={data}", f"--out={root / 'run'}", "--epochs=3", "--batch_size=32"])
    return data, root / "run" / "best.pt"


def test_evaluate_prints_exactly_one_line(cli, trained):
    data, ckpt = trained
    code, out, err = cli("evaluate", str(ckpt), f"--data_dir={data}")
    assert code == 0, err
    assert re.fullmatch(r"Test accuracy: \d{1,3}\.\d\d% \(\d+/60\)\n", out), out
    correct = int(out.split("(")[1].split("/")[0])
    assert out.startswith(f"Test accuracy: {100 * correct / 60:.2f}%")
    assert correct >= 42  # the fixture learned: 70 % or more (chance is 10 %)
    assert "warning" not in err  # the data the model was trained beside: nothing to warn about


def test_checkpoint_holds_everything_as_plain_values(trained):
    _, ckpt = trained
    state = torch.load(ckpt, weights_only=True)
    assert state["format"] == "fashion_trainer" and state["format_version"] == ft.FORMAT_VERSION
    assert state["classes"] == [str(d) for d in range(10)]
    assert state["model_config"]["input_shape"] == [1, 28, 28]
    assert len(state["model_config"]["mean"]) == 1 and state["model_config"]["std"][0] > 0
    assert state["train_config"]["epochs"] == 3 and 0 <= state["metrics"]["val_accuracy"] <= 1
    assert len(state["data_fingerprint"]["train"]) == 16 and len(state["data_fingerprint"]["test"]) == 16


def test_evaluate_warns_when_the_test_data_differs(cli, trained, tmp_path):
    _, ckpt = trained
    other = write_course_npz(tmp_path / "other", n_train=20, n_test=30, seed=7)
    code, out, err = cli("evaluate", str(ckpt), f"--data_dir={other}")
    assert code == 0 and "warning:" in err and "differs" in err
    assert out.startswith("Test accuracy:") and len(out.splitlines()) == 1


def _bad_checkpoint(path: Path, kind: str, good: Path) -> tuple[str, ...]:
    """Write one kind of bad checkpoint; returns fragments the error must name."""
    if kind == "missing":
        return ("does not exist",)
    if kind == "empty":
        path.write_bytes(b"")
        return ("truncated or corrupt",)
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:2000])
        return ("truncated or corrupt",)
    if kind == "text":
        path.write_text("hello")
        return ("truncated or corrupt",)
    if kind == "bare state dict":
        torch.save(OrderedDict(conv1_weight=torch.zeros(3), fc1_bias=torch.zeros(2)), path)
        return ("bare state_dict", "conv1_weight")
    if kind == "foreign dict":
        torch.save({"epoch": 3, "acc": 0.9}, path)
        return ("not a fashion_trainer checkpoint",)
    if kind == "missing keys":
        state = torch.load(good, weights_only=True)
        del state["model_config"]
        torch.save(state, path)
        return ("is missing", "model_config", "damaged")
    if kind == "newer format":
        state = torch.load(good, weights_only=True)
        state["format_version"] = ft.FORMAT_VERSION + 1
        torch.save(state, path)
        return (f"format {ft.FORMAT_VERSION + 1}", "update")
    if kind == "mismatched weights":
        state = torch.load(good, weights_only=True)
        state["model_config"]["stages"] = [[8], [8], [8]]
        torch.save(state, path)
        return ("do not fit",)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["missing", "empty", "truncated", "text", "bare state dict", "foreign dict", "missing keys", "newer format", "mismatched weights"],
)
def test_bad_checkpoints_are_refused_with_one_line(cli, trained, tmp_path, kind):
    data, good = trained
    path = tmp_path / "bad.pt"
    fragments = _bad_checkpoint(path, kind, good)
    code, _, err = cli("evaluate", str(path), f"--data_dir={data}")
    assert_one_line_error(code, err, "bad.pt", *fragments)


def test_malicious_pickle_is_refused_without_running_code(cli, trained, tmp_path):
    data, _ = trained
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"format": "fashion_trainer", "payload": Exploit()}, tmp_path / "evil.pt")
    code, _, err = cli("evaluate", str(tmp_path / "evil.pt"), f"--data_dir={data}")
    assert_one_line_error(code, err, "evil.pt", "refused")
    assert not marker.exists()


def test_evaluate_bad_arguments(cli, trained):
    _data, ckpt = trained
    assert_one_line_error(*cli("evaluate", str(ckpt), "--batch_size=0")[::2], "--batch_size", exit_code=2)
    assert_one_line_error(*cli("evaluate", str(ckpt), "--device=gpu")[::2], "--device", exit_code=2)


def test_test_time_augmentation_averages_turned_copies():
    torch.manual_seed(0)
    model = ft.build_model(
        dataclasses.replace(ft.DATASETS["corruptedmnist"].model_config, input_shape=(1, 28, 28), num_classes=10, mean=(0.13,), std=(0.3,))
    ).eval()
    with torch.no_grad():  # random weights of a real scale: an untrained network is equally unsure of every image
        for weight in model.parameters():
            weight.normal_(0, 0.2)
    x = torch.rand(6, 1, 28, 28) * torch.linspace(0.2, 1, 6).view(6, 1, 1, 1)
    cpu = torch.device("cpu")
    single = ft.predict_logits(model, x, cpu).softmax(1)
    assert torch.allclose(ft.predict_probs(model, x, cpu), single)
    turned = [ft.predict_logits(model, ft.affine_warp(x, torch.full((6,), a)), cpu).softmax(1) for a in (-10.0, 10.0)]
    full = (turned[0] + single + turned[1]) / 3
    assert torch.allclose(ft.predict_probs(model, x, cpu, degrees=[-10, 0, 10]), full, atol=1e-6)
    # only the digits whose single view is less sure than `confidence` are turned; the others keep their single view
    sure = single.max(1).values
    cut = float(sure.median())
    chosen = ft.predict_probs(model, x, cpu, degrees=[-10, 0, 10], confidence=cut)
    unsure = sure < cut
    assert 0 < int(unsure.sum()) < 6
    assert torch.allclose(chosen[unsure], full[unsure], atol=1e-6) and torch.equal(chosen[~unsure], single[~unsure])


def test_evaluate_uses_the_checkpoints_test_turns_unless_told_not_to(cli, trained, monkeypatch):
    data, good = trained
    asked, real = [], ft.predict_probs
    monkeypatch.setattr(ft, "predict_probs", lambda *a, **k: asked.append((list(a[4]), a[6])) or real(*a, **k))
    assert torch.load(good, weights_only=True)["model_config"]["test_turns"] == [-10, 0, 10]
    code, out, err = cli("evaluate", str(good), f"--data_dir={data}")
    assert code == 0 and "averaging turns of -10, 0, 10 degrees for digits whose single view is less than 90 % sure" in err
    assert out.startswith("Test accuracy:")
    code, out, err = cli("evaluate", str(good), f"--data_dir={data}", "--tta=False")
    assert code == 0 and "averaging" not in err and out.startswith("Test accuracy:")
    assert asked == [([-10, 0, 10], 0.9), ([], 0.9)]  # the turns are scored, not only announced
    code, _, err = cli("evaluate", str(good), f"--data_dir={data}", "--tta=maybe")
    assert_one_line_error(code, err, "--tta", "True or False", exit_code=2)


def test_scoring_on_the_bundled_sample_says_when_the_digits_may_be_training_digits(cli, tiny_data, tmp_path):
    sample = str(ft.SAMPLE_DATA_DIR)
    assert cli("train", f"--data_dir={tiny_data}", "--out=other", "--epochs=1")[0] == 0
    code, out, err = cli("evaluate", "other/best.pt", f"--data_dir={sample}", "--tta=False")
    assert code == 0, err
    assert out.startswith("Test accuracy:") and "(on the bundled sample, whose digits are MNIST training digits" in out
    assert cli("train", f"--data_dir={sample}", "--out=own", "--epochs=1", "--batch_size=256")[0] == 0
    code, out, err = cli("evaluate", "own/best.pt", f"--data_dir={sample}", "--tta=False")
    assert code == 0 and "bundled sample" not in out, err
    assert_one_line_error(*cli("evaluate", "own/best.pt", "--precision=half")[::2], "--precision", exit_code=2)


def test_evaluate_reports_a_model_that_always_answers_3_as_worked_out_by_hand(cli, trained, tmp_path, monkeypatch, figures):
    """Every number a user reads, against a case worked out by hand: a network whose weights are all zero but the
    classifier's bias for 3 answers 3 for every image, so the result line, the per-class lines and the confusion matrix
    follow from the test labels alone."""
    data, path = trained
    ckpt = ft.Checkpoint.load(path)
    model = ckpt.model()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].bias[3] = 5.0
    dataclasses.replace(ckpt, state_dict=model.state_dict()).save(tmp_path / "threes.pt")
    shown, plot = [], ft.plot_confusion
    monkeypatch.setattr(ft, "plot_confusion", lambda confusion, *a: shown.append((confusion, *a)) or plot(confusion, *a))
    code, out, err = cli("evaluate", "threes.pt", f"--data_dir={data}", "--plot=threes.png")
    assert code == 0, err
    labels = torch.from_numpy(np.load(data / "test.npz")["labels"]).long()
    counts = torch.bincount(labels, minlength=10)
    assert out == f"Test accuracy: {100 * int(counts[3]) / 60:.2f}% ({int(counts[3])}/60)\n"
    for digit in range(10):
        assert f"  {digit:>12}: {100.0 if digit == 3 else 0.0:6.2f}% of {int(counts[digit])}\n" in err
    expected = torch.zeros(10, 10, dtype=torch.long)
    expected[:, 3] = counts  # every true class in the column of 3
    confusion, classes, title, where = shown[0]
    assert torch.equal(confusion, expected) and classes == ft.DIGITS and f"{100 * int(counts[3]) / 60:.2f}% correct" in title
    assert (tmp_path / "threes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(where) == "threes.png"
    # the picture: every row that holds digits is dark in the column of 3 alone, and says its count there
    axes = figures[0].axes[0]
    shades = np.zeros((10, 10))
    shades[:, 3] = (counts > 0).numpy()
    assert np.array_equal(axes.images[0].get_array(), shades)
    assert sorted((t.get_position(), t.get_text()) for t in axes.texts) == sorted(((3, i), str(int(n))) for i, n in enumerate(counts) if n)
    # and the result compare shows, recorded beside it
    result = json.loads((tmp_path / "threes_test.json").read_text())
    assert (result["correct"], result["total"], result["accuracy"]) == (int(counts[3]), 60, int(counts[3]) / 60)
