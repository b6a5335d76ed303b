"""Your model, our harness: `train --model=model.py:MyAwesomeModel` trains a student's own network, every mistake in the
file is one line before a single step, and a checkpoint never makes the trainer import code by itself."""

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, ctrl_c_at_step, ft

COURSE_MODEL = Path(__file__).resolve().parent / "fixtures" / "course_model.py"
LEARN = ("--batch_size=32", "--augment=False")  # the bars of the tiny data, learned in a few epochs (chance: 10 %)


def accuracy(out: str) -> float:
    """The percentage in evaluate's result line."""
    return float(out.split("Test accuracy: ")[1].split("%")[0])


def test_your_model_trains_continues_after_a_kill_and_is_evaluated_only_when_named(cli, tiny_data, tmp_path, monkeypatch):
    shutil.copy(COURSE_MODEL, tmp_path / "model.py")
    args = ("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=3", "--model=model.py:MyAwesomeModel", *LEARN)
    real = ctrl_c_at_step(monkeypatch, 8)  # 6 steps an epoch: stopped in epoch 2
    assert cli(*args)[0] == 130
    monkeypatch.setattr(ft, "update_ema", real)
    code, _, err = cli("train", "--resume=run")  # the run's own file, not named: not imported
    assert_one_line_error(
        code, err, "run/last.pt was trained with your model", "train --resume=run --model=model.py:MyAwesomeModel", exit_code=2
    )
    code, out, err = cli(*args)  # the same command again, as after a Colab disconnect
    assert code == 0 and "continuing the unfinished run in run after epoch 1 of 3" in err, err
    saved = torch.load(tmp_path / "run" / "best.pt", weights_only=True)  # tensors and plain values: no class inside
    assert saved["model_config"]["user_model"] == "model.py:MyAwesomeModel" and saved["model_config"]["user_args"] == {}
    assert saved["model_config"]["user_sha256"] == hashlib.sha256(COURSE_MODEL.read_bytes()).hexdigest()
    assert set(saved["state_dict"]) == set(ft.import_model(str(COURSE_MODEL)).cls().state_dict())  # its weights, not the CNN's
    code, _, err = cli("evaluate", "run/best.pt", f"--data_dir={tiny_data}")
    assert_one_line_error(code, err, "run/best.pt was trained with your model model.py:MyAwesomeModel", exit_code=2)
    assert f"run: python fashion_trainer.py evaluate run/best.pt --data_dir={tiny_data} --model=model.py:MyAwesomeModel" in err
    code, out, err = cli("evaluate", "run/best.pt", f"--data_dir={tiny_data}", "--model=model.py:MyAwesomeModel")
    assert code == 0 and accuracy(out) >= 60, err  # measured: 88 %
    for command in (("show", "--checkpoint=run/best.pt", "--split=test"), ("mc_dropout", "run/best.pt")):
        code, _, err = cli(*command, f"--data_dir={tiny_data}")
        assert_one_line_error(code, err, "was trained with your model model.py:MyAwesomeModel", exit_code=2)
        assert cli(*command, f"--data_dir={tiny_data}", "--model=model.py")[0] == 0
    assert_one_line_error(*cli("evaluate", "run/best.pt", "--model=model.py:Other")[::2], "Other in model.py is missing", exit_code=2)


def test_a_checkpoint_never_makes_the_trainer_import_the_model_it_names(cli, tiny_data, tmp_path):
    marker = tmp_path / "imported"
    (tmp_path / "model.py").write_text(f"open({str(marker)!r}, 'a').close()\n" + COURSE_MODEL.read_text())
    assert cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=1", "--model=model.py", *LEARN)[0] == 0
    marker.unlink()
    for command in (("evaluate", "run/best.pt"), ("train", "--resume=run"), ("predict", "run/best.pt", "x.png"), ("compare", "run")):
        cli(*command, *([f"--data_dir={tiny_data}"] if command[0] == "evaluate" else []))
        assert not marker.exists(), command  # nothing in a checkpoint imports or runs code
    assert cli("evaluate", "run/best.pt", f"--data_dir={tiny_data}", "--model=model.py")[0] == 0 and marker.exists()


MISTAKES = {
    "missing file": (None, "--model=nope.py", ["nope.py is no Python file here", "PATH.py:ClassName"]),
    "missing class": ("class Net(nn.Module):\n    pass\n", "--model=model.py:Model", ["Model in model.py is missing", "it defines Net"]),
    "two classes": ("class A(nn.Module):\n    pass\nclass B(nn.Module):\n    pass\n", "--model=model.py", ["name the class", "A, B"]),
    "no module": ("class Net:\n    pass\n", "--model=model.py:Net", ["not an nn.Module class", "no nn.Module class"]),
    "import fails": ("import no_such_package\n", "--model=model.py", ["importing model.py failed", "no_such_package"]),
    "needs arguments": (
        "class Net(nn.Module):\n    def __init__(self, width):\n        super().__init__()\n",
        "--model=model.py",
        ["Net() needs width", """--model_args='{"width": 0}'"""],
    ),
    "constructor fails": (
        "class Net(nn.Module):\n    def __init__(self):\n        raise ValueError('no GPU here')\n",
        "--model=model.py",
        ["Net(**{}) failed", "ValueError: no GPU here"],
    ),
    "forward fails": (
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(100, 10)\n"
        "    def forward(self, x):\n        return self.fc(x.flatten(1))\n",
        "--model=model.py",
        ["failed on a batch of images shaped [2, 1, 28, 28]", "mat1 and mat2"],
    ),
    "wrong output": (
        "class Net(nn.Module):\n    def forward(self, x):\n        return x.flatten(1)\n",
        "--model=model.py",
        ["returned torch.float32 [2, 784]", "[2, 10]", "logits or log-probabilities"],
    ),
    "bad arguments": (None, "--model_args=3", ["--model_args must be keyword arguments"]),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_mistake_in_a_model_file_is_one_line_before_a_single_step_with_nothing_written(cli, tiny_data, tmp_path, monkeypatch, mistake):
    source, flag, fragments = MISTAKES[mistake]
    if source is not None:
        (tmp_path / "model.py").write_text("from torch import nn\n" + source)
    monkeypatch.setattr(ft, "train_step", lambda *a, **k: pytest.fail("a step was taken"))
    extra = ["--model=model.py"] if mistake == "bad arguments" else []
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=1", flag, *extra)
    assert_one_line_error(code, err, *fragments, exit_code=2)
    assert not (tmp_path / "run").exists()


def test_a_changed_model_file_is_warned_about_and_weights_that_no_longer_fit_are_one_line(cli, tiny_data, tmp_path):
    shutil.copy(COURSE_MODEL, tmp_path / "model.py")
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=1", "--model=model.py", *LEARN)
    assert code == 0 and "augmentation was tuned for the built-in CNN" not in err, err  # said only where it warps
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=warped", "--epochs=1", "--model=model.py", "--batch_size=32")
    assert code == 0 and "augmentation was tuned for the built-in CNN" in err and "(--augment=False)" in err, err
    (tmp_path / "model.py").write_text(COURSE_MODEL.read_text() + "\n# a comment added since\n")
    code, out, err = cli("evaluate", "run/best.pt", f"--data_dir={tiny_data}", "--model=model.py")
    assert code == 0 and "warning: model.py has changed since the run was saved" in err and "Test accuracy:" in out, err
    (tmp_path / "other.py").write_text(COURSE_MODEL.read_text().replace("MyAwesomeModel", "Net"))  # the same layers, another class
    code, _, err = cli("evaluate", "run/best.pt", f"--data_dir={tiny_data}", "--model=other.py")
    assert_one_line_error(code, err, "names Net, but the run's model is model.py:MyAwesomeModel", exit_code=2)
    (tmp_path / "model.py").write_text(COURSE_MODEL.read_text().replace("nn.Linear(128, 10)", "nn.Linear(128, 20), nn.Linear(20, 10)"))
    code, _, err = cli("evaluate", "run/best.pt", f"--data_dir={tiny_data}", "--model=model.py")
    assert_one_line_error(code, err, "run/best.pt: its weights do not fit the model", "--model_args it was trained with")


def test_log_probabilities_train_as_logits_do_and_arguments_and_the_model_are_settings(cli, tiny_data, tmp_path):
    source = COURSE_MODEL.read_text().replace("return self.fc1(x)", "return torch.log_softmax(self.fc1(x), dim=1)")
    (tmp_path / "logprob.py").write_text(source)
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--epochs=3", "--model=logprob.py", """--model_args={"dropout": 0.25}""", *LEARN)
    assert code == 0, err
    run = next((tmp_path / "checkpoints").iterdir())
    assert run.name.startswith(f"corruptedmnist-data_dir{run.name.split('data_dir')[1][:6]}-epochs3-modellogpr")  # from the flags given
    assert torch.load(run / "best.pt", weights_only=True)["model_config"]["user_args"] == {"dropout": 0.25}
    code, out, err = cli("evaluate", f"{run}/best.pt", f"--data_dir={tiny_data}", "--model=logprob.py")
    assert code == 0 and accuracy(out) >= 60, err  # log-probabilities learn as logits do (measured: 88 %)
    assert cli("train", f"--data_dir={tiny_data}", "--out=checkpoints/cnn", "--epochs=1", *LEARN)[0] == 0
    code, out, err = cli("compare")
    assert code == 0 and "model=logprob.py" in out and "model=None" in out, err  # the model is a setting that differs
    code, out, err = cli("lr_find", f"--data_dir={tiny_data}", "--model=logprob.py", "--steps=20", "--batch_size=32", "--start_lr=1e-4")
    assert code == 0 and out.startswith("suggested --lr="), err  # lr_find sweeps your model too


def test_your_model_gets_batches_laid_out_as_the_courses_code_gives_them(cli, tiny_data, tmp_path):
    (tmp_path / "model.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv, self.fc = nn.Conv2d(1, 8, 3), nn.Linear(8 * 13 * 13, 10)\n\n"
        "    def forward(self, x):\n        x = torch.max_pool2d(torch.relu(self.conv(x)), 2)\n"
        "        return self.fc(x.view(x.shape[0], -1))  # a view of 13×13 maps: it fails on channels-last tensors\n"
    )
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=1", "--model=model.py", *LEARN)
    assert code == 0, err
    code, out, err = cli("evaluate", "run/best.pt", f"--data_dir={tiny_data}", "--model=model.py")
    assert code == 0 and "Test accuracy:" in out, err
