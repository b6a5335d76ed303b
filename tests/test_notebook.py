"""The Colab runner, executed cell by cell with nbclient as a Colab user runs it: in a kernel where `google.colab` is
imported at start, with a stand-in Drive (`flush_and_unmount()` takes everything under it away, as in Colab), a clone
that follows an origin repository, Run all again in the same runtime, a `!python` cell after Run all, a SIGKILL mid-
training, a failing step and a wrong URL. Without a GPU the notebook's CPU warning shows."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from test_data import _indexed_mnist

import fashion_trainer as ft

nbclient = pytest.importorskip("nbclient")  # a GPU machine without it (benchmarks/gpu_check.sh) skips the notebook's tests
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = ROOT / "colab_runner.ipynb"
DRIVE_STANDIN = '''"""Stand-in for google.colab.drive: the folder in $STANDIN_DRIVE is reachable only while mounted."""
import os, shutil
from pathlib import Path

_DRIVE = Path(os.environ["STANDIN_DRIVE"])
_AWAY = _DRIVE.with_name(_DRIVE.name + ".unmounted")


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    if _AWAY.exists():
        _AWAY.rename(_DRIVE)
    _DRIVE.mkdir(parents=True, exist_ok=True)
    print("Mounted at", mountpoint)


def flush_and_unmount(timeout_ms=None):
    # copied away and deleted, not renamed: a process whose working directory was inside finds nothing, as in Colab
    shutil.copytree(_DRIVE, _AWAY, symlinks=True)
    shutil.rmtree(_DRIVE)
'''


def test_notebook_is_valid_v4_without_outputs_and_defines_nothing():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert not any(line.lstrip().startswith(("def ", "class ", "lambda")) for c in code for line in c.source.splitlines())


def test_the_notebook_is_a_colab_form_on_a_t4_with_its_badge():
    """Colab shows the parameters cell as a form (a field per parameter, the datasets as a dropdown), asks for a T4, and
    the first cell carries the standard Open in Colab badge; nbclient runs the same cell as plain Python."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata.colab.gpuType == "T4" and nb.metadata.accelerator == "GPU"
    badge = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/"
    assert badge in nb.cells[0].source and badge in (ROOT / "README.md").read_text()
    lines = nb.cells[1].source.splitlines()
    assert re.match(r"# ?@title Parameters", lines[0])  # ruff formats notebooks too: Colab reads "# @param" alike
    assignments = [line for line in lines if not re.match(r"# ?@", line)]
    parameters: dict = {}
    exec(nb.cells[1].source, {}, parameters)
    assert len(assignments) == len(parameters) and all(re.search(r"  # ?@param [{\[]", line) for line in assignments)
    dropdown = next(line for line in assignments if line.startswith("DATASET ="))
    assert json.loads(dropdown.split("@param ", 1)[1]) == list(ft.DATASETS)


def test_notebook_defaults_are_the_trainers_own():
    """The parameters cell copies no default of `train`: EPOCHS and LR are None (the trainer decides), the dataset is the
    trainer's default, and it never unmounts Drive (which would break the `!python` habit after Run all)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    parameters: dict = {}
    exec(nb.cells[1].source, {}, parameters)
    assert parameters["EPOCHS"] is None and parameters["LR"] is None and parameters["RUN_NAME"] == ""
    assert parameters["DATASET"] == ft.DEFAULT_DATASET and parameters["TRAIN_FLAGS"] == ""
    assert not any("flush_and_unmount()" in c.source for c in nb.cells if c.cell_type == "code")
    assert "!python fashion_trainer.py train --lr=1e-4" in "".join(c.source for c in nb.cells)


def test_the_readmes_colab_section_names_every_parameter_of_the_notebook():
    """The README's Colab section and the notebook cannot drift apart on what a user sets: each parameter is explained."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    parameters: dict = {}
    exec(nb.cells[1].source, {}, parameters)
    section = (ROOT / "README.md").read_text().split("## Google Colab")[1].split("\n## ")[0]
    assert not [name for name in parameters if f"`{name}`" not in section and f"`{name}=" not in section]
    assert "give it a minute" in section and "give it a minute" in "".join(c.source for c in nb.cells)


class Runtime(nbclient.NotebookClient):
    """One Colab runtime: a kernel that lives across several Run alls; counts the redraws of displayed images."""

    redraws = 0

    def process_message(self, msg, cell, cell_index):
        self.redraws += msg.get("msg_type") == "update_display_data"
        return super().process_message(msg, cell, cell_index)

    def run_all(self, **parameters) -> tuple[nbformat.NotebookNode, Exception | None]:
        """Run the notebook's cells in order with these parameters, stopping at the first error, as Run all does."""
        nb = nbformat.read(NOTEBOOK, as_version=4)
        nb.cells[1].source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
        self.nb = nb
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                try:
                    self.execute_cell(cell, index)
                except nbclient.exceptions.CellExecutionError as exc:
                    return nb, exc
        return nb, None

    def run_cell(self, source: str) -> str:
        """A cell the user types after Run all; returns what it printed."""
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.execute_cell(cell, len(self.nb.cells) - 1)
        return json.dumps(cell.outputs)


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """Starts Colab runtimes: a kernel with the stand-in `google.colab` imported at start and Drive not yet mounted."""
    standin = tmp_path / "standin"
    (standin / "google" / "colab").mkdir(parents=True)
    (standin / "google" / "colab" / "__init__.py").write_text("")
    (standin / "google" / "colab" / "drive.py").write_text(DRIVE_STANDIN)
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab\n")
    drive = tmp_path / "drive"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(standin), os.environ.get("PYTHONPATH", "")]),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "STANDIN_DRIVE": str(drive),
        "TQDM_DISABLE": "1",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),  # `!python` is this Python
    }
    (tmp_path / "content").mkdir()
    kernels = []

    def start() -> Runtime:
        """A new runtime: Drive is not mounted until the notebook mounts it."""
        if drive.exists():
            shutil.copytree(drive, drive.with_name("drive.unmounted"), dirs_exist_ok=True)
            shutil.rmtree(drive)
        runtime = Runtime(
            nbformat.v4.new_notebook(), timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path / "content")}}
        )
        context = runtime.setup_kernel(env=env)
        context.__enter__()
        kernels.append(context)
        return runtime

    yield start
    for context in kernels:
        context.__exit__(None, None, None)


def text_of(nb: nbformat.NotebookNode) -> str:
    """Everything the cells printed."""
    return json.dumps([c.get("outputs", []) for c in nb.cells], ensure_ascii=False)


def images_in(cell: nbformat.NotebookNode) -> int:
    """How many images a cell shows."""
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def parameters(tmp_path: Path, **changes) -> dict:
    """The parameters cell for tiny runs on the stand-in Drive, with `changes`."""
    return {
        "REPO_URL": str(tmp_path / "origin"),
        "PROJECT_DIR": str(tmp_path / "drive" / "MyDrive" / "fashion_trainer"),
        "DATASET": "corruptedmnist",
        "DATA_DIR": "",
        "USE_SAMPLE": False,
        "MNIST_SOURCE": str(tmp_path / "mnist"),
        "EPOCHS": None,
        "LR": None,
        "RUN_NAME": "",
        "MODEL": "",
        "TRAIN_FLAGS": "--batch_size=16",
        "PREPARE_FLAGS": "--shard_size=20 --test_size=40",
    } | changes


GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def git(folder: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def origin(tmp_path) -> Path:
    """The repository the notebook clones (the files it needs), and fake MNIST for `prepare` to build from."""
    repo = tmp_path / "origin"
    (repo / "data").mkdir(parents=True)
    for name in ("fashion_trainer.py", "requirements.txt", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    _indexed_mnist(tmp_path / "mnist", n_train=5100, n_test=40)
    return repo


def commit_line(repo: Path, line: str) -> str:
    """Make the last line of origin's fashion_trainer.py print `line` on import, commit it; returns the short hash."""
    path = repo / "fashion_trainer.py"
    text = path.read_text().split("\n# journey marker")[0]
    path.write_text(f"{text}\n# journey marker\nprint({line!r})\n")
    git(repo, "commit", "-qam", line)
    return git(repo, "log", "-1", "--format=%h")


def test_a_colab_user_across_updates_settings_and_the_python_habit(colab, origin, tmp_path):
    runtime = colab()
    first = git(origin, "log", "-1", "--format=%h")
    nb, error = runtime.run_all(**parameters(tmp_path))
    assert error is None, error
    text = text_of(nb)
    assert f"on commit {first}" in text and "Cloning into" in text  # git's own output reached the cell
    if torch.cuda.is_available():  # the suite on a GPU machine: the report names it
        assert "GPU: " in text and "WARNING: this runtime has no GPU" not in text
    else:
        assert "WARNING: this runtime has no GPU" in text and "Runtime > Change runtime type" in text
    assert f"code: {first} " in text and "precision: " in text and "free space in " in text  # the setup report
    assert "run folder: checkpoints/corruptedmnist-batch_size16" in text
    assert "epoch 10/10:" in text and "--epochs" not in text  # the dataset's default number of epochs
    assert images_in(nb.cells[5]) == 1 and runtime.redraws >= 1  # the curve, redrawn in place (tiny epochs: not each one)
    assert "Test accuracy:" in text and "/40)" in text and images_in(nb.cells[6]) >= 2  # curve and confusion
    run = tmp_path / "drive" / "MyDrive" / "fashion_trainer" / "checkpoints" / "corruptedmnist-batch_size16"
    assert (run / "best_misclassified.png").is_file() or "gets every test image right" in text
    assert (run / "best_misclassified.png").is_file() == (images_in(nb.cells[6]) == 3)
    # the habit from the design card, in a new cell after Run all: Drive is still there and so is the project
    typed = runtime.run_cell("!python fashion_trainer.py evaluate checkpoints/corruptedmnist-batch_size16/best.pt")
    assert "Test accuracy:" in typed and "/40)" in typed, typed

    # upstream moves on; Run all again in the same runtime with changed settings, and the student's own model beside the
    # code on Drive, runs the new code as a new run of that model (evaluated and shown with it named again)
    second = commit_line(origin, "code of the second commit")
    clone = tmp_path / "drive" / "MyDrive" / "fashion_trainer"
    shutil.copy(ROOT / "tests" / "fixtures" / "course_model.py", clone / "model.py")
    changed = parameters(tmp_path, LR=1e-4, MODEL="model.py:MyAwesomeModel", TRAIN_FLAGS="--batch_size=16 --budget=6")
    nb, error = runtime.run_all(**changed)
    assert error is None, error
    text = text_of(nb)
    assert f"on commit {second}" in text and "code of the second commit" in json.dumps(nb.cells[3].outputs)
    name = ft.run_name(["--dataset=corruptedmnist", "--model=model.py:MyAwesomeModel", "--lr=0.0001", "--batch_size=16", "--budget=6"])
    assert f"run folder: checkpoints/{name}" in text and "epochs fit in --budget=6" in text
    assert (
        torch.load(clone / "checkpoints" / name / "best.pt", weights_only=True)["model_config"]["user_model"] == "model.py:MyAwesomeModel"
    )
    assert "nothing was trained" not in text and "Test accuracy:" in text and "error:" not in text
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    compared = re.findall(r"^(corruptedmnist-\S+) ", printed, re.MULTILINE)  # compare's table: both runs, side by side
    assert compared == ["corruptedmnist-batch_size16", name] and "model=model.py:MyAwesomeModel" in printed, printed
    assert "settings that differ" in text and images_in(nb.cells[-1]) == 1  # and their curves in one picture

    # an edit of the user's own blocks the next update: said in one line, kept, and run; the same settings show the
    # finished run, labelled as the earlier run's, with nothing trained or rebuilt
    (clone / "fashion_trainer.py").write_text((clone / "fashion_trainer.py").read_text().replace("second commit", "users edit"))
    commit_line(origin, "code of the third commit")
    nb, error = runtime.run_all(**changed)
    assert error is None, error
    text = text_of(nb)
    assert "NOTE: the code in" in text and "was not updated" in text and "your changes there are kept" in text
    assert f"on commit {second}" in text and "code of the users edit" in text
    assert "already holds corrupted MNIST" in text and "epoch 1/" not in text
    assert "holds a finished run" in text and "nothing was trained, these are its results" in text and "error: checkpoints" not in text
    assert "Test accuracy:" in text and images_in(nb.cells[5]) == 1


def test_a_failing_step_stops_run_all_with_one_line(colab, origin, tmp_path):
    nb, error = colab().run_all(**parameters(tmp_path, LR=-1.0))
    assert error is not None
    text = text_of(nb)
    assert "--lr must be a number" in text and "stopped: `train` failed with exit status 2" in text
    assert "Test accuracy:" not in text and "done:" not in text
    assert not list((tmp_path / "drive").rglob("best.pt"))


def test_first_open_says_what_to_set_and_shows_gits_message(colab, tmp_path):
    runtime = colab()
    nb, error = runtime.run_all(**parameters(tmp_path, REPO_URL="https://github.com/<you>/fashion_trainer.git"))
    assert error is not None and "set REPO_URL in the parameters cell" in text_of(nb)
    nb, error = runtime.run_all(**parameters(tmp_path, REPO_URL=str(tmp_path / "no-such-repository")))
    text = text_of(nb)
    assert error is not None and "fatal:" in text and "no-such-repository" in text  # git's words, captured into the cell
    assert "stopped: git clone" in text and "git's message is above" in text


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


def test_sigkill_mid_training_then_run_all_again_in_a_new_runtime_continues(colab, origin, tmp_path):
    result: dict = {}
    settings = parameters(tmp_path, EPOCHS=5)
    runtime = colab()
    runner = threading.Thread(target=lambda: result.update(zip(("nb", "error"), runtime.run_all(**settings))))
    runner.start()
    history = tmp_path / "drive" / "MyDrive" / "fashion_trainer" / "checkpoints" / "corruptedmnist-epochs5-batch_size16" / "history.json"
    deadline = time.monotonic() + 300
    while not history.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    pids = _train_processes("corruptedmnist-epochs5-batch_size16")
    assert pids, "no training process to kill"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # as when Colab recycles the runtime: no handler runs
    runner.join()
    assert result["error"] is not None and "was killed (signal 9)" in text_of(result["nb"])
    done = len(json.loads(history.read_text())["epochs"])
    assert done < 5
    nb, error = colab().run_all(**settings)  # a new runtime, Run all again
    assert error is None, error
    assert re.search(r"continuing the unfinished run in checkpoints/corruptedmnist-epochs5-batch_size16 after epoch \d", text_of(nb))
    assert [e["epoch"] for e in json.loads(history.read_text())["epochs"]] == [1, 2, 3, 4, 5]


def test_the_open_in_colab_link_and_repo_url_name_one_repository(tmp_path):
    """The README's link opens the notebook of the repository that the notebook's REPO_URL clones, and
    scripts/colab_link.py moves both to a fork's repository at once."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import colab_link

    def named(root: Path) -> tuple[str, str]:
        link = colab_link.LINK.search((root / "README.md").read_text()).group(1)
        nb = nbformat.read(root / "colab_runner.ipynb", as_version=4)
        assert colab_link.LINK.search(nb.cells[0].source).group(1) == link  # the notebook's own badge
        return link, colab_link.github_repository(colab_link.REPO_URL.search(nb.cells[1].source).group(1))

    link, cloned = named(ROOT)
    assert link == cloned
    for name in ("README.md", "colab_runner.ipynb"):
        shutil.copy(ROOT / name, tmp_path / name)
    assert colab_link.set_repository(tmp_path, "git@github.com:someone/fashion_trainer.git") == "someone/fashion_trainer"
    assert named(tmp_path) == ("someone/fashion_trainer", "someone/fashion_trainer")
    nbformat.validate(nbformat.read(tmp_path / "colab_runner.ipynb", as_version=4))
