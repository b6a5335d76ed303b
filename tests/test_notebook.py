"""The Colab runner, executed cell by cell with nbclient as a user's Run all would: first run, Run all again after it
finished, after a SIGKILL mid-training, a failing step, and the clone step. Drive and nvidia-smi are absent here."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import nbclient
import nbformat
import pytest
import torch
from conftest import ROOT
from test_data import _indexed_mnist

NOTEBOOK = ROOT / "colab_runner.ipynb"
FLAGS = "--batch_size=16"


def test_notebook_is_valid_v4_without_outputs_and_defines_nothing():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert not any(line.lstrip().startswith(("def ", "class ", "lambda")) for c in code for line in c.source.splitlines())


@pytest.fixture
def project(tmp_path) -> Path:
    """A project folder as a clone on Drive holds it, and fake MNIST to build the data from."""
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    for name in ("fashion_trainer.py", "requirements.txt"):
        shutil.copy(ROOT / name, folder / name)
    shutil.copytree(ROOT / "data" / "sample_corruptedmnist", folder / "data" / "sample_corruptedmnist")
    _indexed_mnist(tmp_path / "mnist", n_train=5100, n_test=40)
    return folder


def run_all(project: Path, **changes) -> tuple[nbformat.NotebookNode, Exception | None]:
    """Run all cells with tiny parameters (and `changes`); returns the notebook and the error that stopped it, if any."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    parameters = {
        "REPO_URL": "https://example.invalid/<you>/fashion_trainer.git",
        "PROJECT_DIR": str(project),
        "DATASET": "corruptedmnist",
        "DATA_DIR": "",
        "USE_SAMPLE": False,
        "MNIST_SOURCE": str(project.parent / "mnist"),
        "EPOCHS": 3,
        "LR": 3e-3,
        "RUN_NAME": "nb",
        "TRAIN_FLAGS": FLAGS,
        "PREPARE_FLAGS": "--shard_size=20 --test_size=40",
    } | changes
    nb.cells[1].source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(project.parent)}})
    try:
        client.execute(env={**os.environ, "TQDM_DISABLE": "1"})
    except nbclient.exceptions.CellExecutionError as exc:
        return nb, exc
    return nb, None


def text_of(nb: nbformat.NotebookNode) -> str:
    """Everything the cells printed."""
    return json.dumps([c.get("outputs", []) for c in nb.cells], ensure_ascii=False)


def test_first_run_builds_the_data_trains_and_shows_curve_and_confusion(project):
    nb, error = run_all(project)
    assert error is None, error
    text = text_of(nb)
    assert "no GPU" in text and "wrote 5 × 20 train and 40 test images" in text
    assert "Test accuracy:" in text and "/40)" in text and "done: checkpoints/nb" in text
    assert sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])) == 2  # curve, confusion
    assert (project / "data" / "corruptedmnist" / "prepare.json").is_file()
    # Run all again after it finished: nothing is trained or rebuilt, and the results are labelled as the earlier run's
    nb, error = run_all(project)
    assert error is None, error
    text = text_of(nb)
    assert "already holds corrupted MNIST" in text and "had already finished" in text and "epoch 1/3" not in text
    assert "Test accuracy:" in text
    # the same name with other settings is refused, and nothing after it runs
    nb, error = run_all(project, LR=1e-4)
    assert error is not None and "--lr=0.003, this command says 0.0001" in text_of(nb)
    assert "Test accuracy:" not in text_of(nb)


def test_a_failing_step_stops_run_all_with_one_line(project):
    nb, error = run_all(project, LR=-1.0)
    assert error is not None
    text = text_of(nb)
    assert "--lr must be a number" in text and "stopped: `train` failed with exit status 2" in text
    assert "Test accuracy:" not in text and "done:" not in text and not (project / "checkpoints" / "nb" / "best.pt").exists()


def _train_processes(marker: str) -> list[int]:
    """Process ids of `fashion_trainer.py train` children whose command line names `marker`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"fashion_trainer.py" in part for part in cmdline) and b"train" in cmdline and any(marker.encode() in p for p in cmdline):
            pids.append(int(proc.name))
    return pids


def test_sigkill_mid_training_then_run_all_again_resumes_to_the_uninterrupted_weights(project, tmp_path):
    shutil.copytree(project, tmp_path / "whole")  # the same project, trained without interruption (after prepare)
    nb, error = run_all(tmp_path / "whole", EPOCHS=5, RUN_NAME="whole")
    assert error is None, error
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(zip(("nb", "error"), run_all(project, EPOCHS=5, RUN_NAME="cut"))))
    runner.start()
    history = project / "checkpoints" / "cut" / "history.json"
    deadline = time.monotonic() + 300
    while not history.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    pids = _train_processes(str(project / "checkpoints"))
    pids = pids or _train_processes("checkpoints/cut")
    assert pids, "no training process to kill"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # as when Colab recycles the runtime: no handler runs
    runner.join()
    assert result["error"] is not None and "was killed (signal 9)" in text_of(result["nb"])
    nb, error = run_all(project, EPOCHS=5, RUN_NAME="cut")  # Run all again
    assert error is None, error
    assert "continuing the unfinished run in checkpoints/cut" in text_of(nb)
    epochs = [e["epoch"] for e in json.loads(history.read_text())["epochs"]]
    assert epochs == [1, 2, 3, 4, 5]
    a, b = (
        torch.load(p / "checkpoints" / n / "last.pt", weights_only=True)["state_dict"]
        for p, n in ((tmp_path / "whole", "whole"), (project, "cut"))
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_first_open_clones_the_repository_or_says_what_to_set(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("fashion_trainer.py", "requirements.txt"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "data" / "sample_corruptedmnist", repo / "data" / "sample_corruptedmnist")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "snapshot"]):
        subprocess.run([*git, *args], check=True)
    nb, error = run_all(tmp_path / "missing")  # the placeholder URL
    assert error is not None and "set REPO_URL in the parameters cell" in text_of(nb)
    nb, error = run_all(tmp_path / "clone", REPO_URL=str(repo), USE_SAMPLE=True, EPOCHS=1)
    assert error is None, error
    assert (tmp_path / "clone" / "fashion_trainer.py").is_file() and "/1000) (on the bundled sample" not in text_of(nb)
    assert "Test accuracy:" in text_of(nb)
