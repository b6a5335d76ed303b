"""CLI: help from docstrings, unknown commands and flags, and the real process's exit status and stderr."""

import ast
import dataclasses
import inspect
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, assert_one_line_error, ft


def test_unknown_flag_suggests_the_right_one(cli):
    code, _, err = cli("train", "--lrr=0.1")
    assert_one_line_error(code, err, "--lrr", "did you mean --lr?", exit_code=2)


def test_unknown_command_suggests_the_right_one(cli):
    code, _, err = cli("evalute", "x.pt")
    assert_one_line_error(code, err, "evalute", "did you mean evaluate?", exit_code=2)


def test_no_prefixed_boolean_flag_is_known(cli):
    code, _, err = cli("prepare", "--noforce", "--source=/nonexistent")
    assert_one_line_error(code, err, "not a folder")


def test_missing_positional_checkpoint_is_a_usage_error(cli):
    code, _, err = cli("evaluate")
    assert_one_line_error(code, err, "needs a CHECKPOINT", exit_code=2)
    code, _, err = cli("evaluate", "--data_dir=x")
    assert_one_line_error(code, err, "needs a CHECKPOINT", exit_code=2)


def run(*args, env=None):
    """The CLI as a user runs it: a real process."""
    environment = {k: v for k, v in os.environ.items() if k != "FASHION_TRAINER_DEBUG"} | (env or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "fashion_trainer.py"), *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env=environment
    )


def test_help_explains_every_flag_from_the_code():
    result = run("train", "--help")
    assert result.returncode == 0
    text = " ".join((result.stdout + result.stderr).split())
    assert "Train the CNN" in text
    for f in dataclasses.fields(ft.TrainConfig):
        if "help" in f.metadata:  # each flag's own line, from TrainConfig: fire alone would list the names only
            assert f"--{f.name}=" in text and " ".join(f.metadata["help"].split()) in text, f.name
    result = run("evaluate", "--help")
    assert "average the checkpoint's test-time turns (False: one view)" in " ".join((result.stdout + result.stderr).split())


def test_real_process_error_is_one_line_without_traceback():
    result = run("evaluate", "/nonexistent/best.pt")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: checkpoint /nonexistent/best.pt does not exist; train one with: python fashion_trainer.py train"
    ]
    assert result.stdout == ""


def test_debug_flag_and_variable_show_the_traceback():
    result = run("evaluate", "/nonexistent/best.pt", "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr
    result = run("evaluate", "/nonexistent/best.pt", env={"FASHION_TRAINER_DEBUG": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_fire_usage_errors_keep_a_nonzero_exit(cli, tiny_data):
    code, _, err = cli("knn", "3", "corruptedmnist", str(tiny_data), "500", "surplus")  # one argument more than knn takes
    assert code == 2 and "Traceback" not in err and "Could not consume arg: surplus" in err  # fire's own usage error


def test_run_name_follows_the_settings():
    """The run folder of `train` and the notebook: the same settings give the same name, a changed one another, where and
    how it runs none; paths leave no slash."""
    default = ft.run_name(["--dataset=corruptedmnist", "--batch_size=16"])
    assert default == "corruptedmnist-batch_size16" == ft.run_name({"batch_size": 16}) == ft.run_name(["--batch_size=16"])
    assert ft.run_name(["--dataset=corruptedmnist", "--lr=0.0001"]) == "corruptedmnist-lr0.0001" == ft.run_name({"lr": 1e-4})
    assert ft.run_name(["--lr=1e-4", "--device=cpu", "--precision=fp32"]) == "corruptedmnist-lr0.0001"
    assert ft.run_name({"dataset": "mnist", "epochs": 3}) == "mnist-epochs3" != ft.run_name({"dataset": "mnist", "epochs": 4})
    by_path = [ft.run_name(["--dataset=mnist", f"--data_dir=/content/drive/{d}"]) for d in ("a", "b")]
    assert by_path[0] != by_path[1] and not any("/" in n for n in by_path)
    long = ft.run_name(["--dataset=cifar", *(f"--flag{i}={i}" for i in range(30))])
    assert len(long) <= 64 and long != ft.run_name(["--dataset=cifar", *(f"--flag{i}={i}" for i in range(31))])


@pytest.mark.parametrize(
    ("capability", "precision"), [((7, 5), "precision: fp16 autocast with a gradient scaler"), ((8, 0), "precision: bf16 autocast")]
)
def test_the_setup_report_names_the_gpu_its_precision_and_the_free_space(monkeypatch, tmp_path, capability, precision):
    class T4:
        name, total_memory = "Tesla T4", 15 * 2**30

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: T4)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(ft.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(20 * 2**30, 5 * 2**30, 15 * 2**30))
    code, gpu, said, free = ft.setup_report("abc1234 2026-12-04 a commit", tmp_path).splitlines()
    assert code == f"code: abc1234 2026-12-04 a commit; torch {torch.__version__}, CUDA 12.4"
    assert gpu == "GPU: Tesla T4, 15.0 GiB" and said == f"{precision} (train's --precision=auto here)"
    assert free == f"free space in {tmp_path}: 15.0 GiB"


def test_the_setup_report_warns_without_a_gpu_or_space(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(ft.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(20 * 2**30, 20 * 2**30 - 2**28, 2**28))
    _, gpu, said, free = ft.setup_report("", tmp_path).splitlines()
    assert gpu.startswith("WARNING: this runtime has no GPU") and "Runtime > Change runtime type > T4 GPU" in gpu
    cpu = ft.precision_name(ft.autocast_dtype(torch.device("cpu"), "auto"))
    assert said.startswith({"bf16": "precision: bf16", "fp32": "precision: fp32"}[cpu])
    assert free == f"free space in {tmp_path}: 0.2 GiB (WARNING: little room for checkpoints; free some space on Drive)"


def test_the_readmes_flag_table_names_every_train_flag_with_the_codes_default():
    """README's copy of the defaults cannot drift from TrainConfig: every flag is in the table once, each literal default
    equals the field's, a dataset-dependent one says so and quotes the dataset table's number."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| flag | default | meaning |")[1].split("\n\n")[0]
    fields = {f.name: f for f in dataclasses.fields(ft.TrainConfig) if "help" in f.metadata}
    others = [name for name in inspect.signature(ft.train).parameters if name not in fields]  # --resume, --if_unfinished
    seen = []
    for row in table.strip().splitlines()[1:]:
        flag_cell, default_cell = (cell.strip() for cell in row.strip("|").split("|")[:2])
        names = re.findall(r"`--(\w+)`", flag_cell)
        defaults = [d.strip() for d in default_cell.split(", ")] if len(names) > 1 else [default_cell]
        assert len(defaults) == len(names), row
        for name, written in zip(names, defaults):
            seen.append(name)
            if name in others:
                continue
            default = fields[name].default
            if default is None:
                assert not re.match(r"^-?[\d.]", written), f"--{name}: README says {written}, the code has no fixed default"
                quoted = re.search(r"\((\d+(?:\.\d+)?) for corruptedmnist\)", written)
                spec = ft.DATASETS[ft.DEFAULT_DATASET]
                if quoted:
                    assert float(quoted.group(1)) == getattr(spec, name), f"--{name}: README says {written}"
            elif isinstance(default, bool):
                assert written == str(default), f"--{name}: README says {written}, the code {default}"
            elif isinstance(default, (int, float)):
                assert float(written.split()[0]) == default, f"--{name}: README says {written}, the code {default}"
            else:
                assert written == default, f"--{name}: README says {written}, the code {default}"
    assert sorted(seen) == sorted([*fields, *others]) and "if_unfinished" in others


def test_the_file_reads_top_down_the_story_of_a_run_above_the_appendix():
    """fashion_trainer.py tells a run's story first (settings, data, model, training, evaluation, commands) and puts the
    machinery a reader can skip in an appendix after it; every top-level name is defined in one of them."""
    source = (ROOT / "fashion_trainer.py").read_text()
    lines = source.splitlines()
    headers = [line.split(" ", 2)[2].split(":")[0] for line in lines if line.startswith(("# " + "-" * 77 + " ", "# " + "=" * 77 + " "))]
    story = ["settings", "data", "model", "training", "evaluation", "commands"]
    assert headers[: len(story) + 1] == [*story, "APPENDIX"], headers
    assert {"run folders and checkpoints", "devices and torchrun", "safe writes and errors", "prepare", "inspection"} <= set(headers)
    appendix = next(i for i, line in enumerate(lines, 1) if line.startswith("# " + "=" * 77 + " APPENDIX"))
    defined = {n.name: n.lineno for n in ast.parse(source).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    for name in ("TrainConfig", "augment_batch", "build_model", "train_epoch", "fit", "evaluate", "train", "main"):
        assert defined[name] < appendix, f"{name} is in the appendix"
    assert next(i for i, line in enumerate(lines, 1) if ".backward(" in line) < appendix
    for name in ("Checkpoint", "open_run", "DeviceUse", "write_atomic", "prepare", "show"):
        assert defined[name] > appendix, f"{name} is in the story"
    lengths = {n.name: n.end_lineno - n.lineno + 1 for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)}
    assert max(lengths.values()) <= 60, sorted(lengths.items(), key=lambda item: -item[1])[:3]  # every function on a screen


def test_the_readme_stays_a_users_page():
    """The README is for users and at most 15 KB; research goes to docs/."""
    assert len((ROOT / "README.md").read_bytes()) <= 15 * 1024


def test_every_mutation_of_scripts_mutate_names_one_line_the_trainer_has():
    """scripts/mutate.py is not run in CI (minutes); this keeps its lines in step with the code they break."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import mutate

    source = (ROOT / "fashion_trainer.py").read_text()
    assert [name for name, line, _, _ in mutate.MUTATIONS if source.count(line) != 1] == []
