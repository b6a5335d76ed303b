"""CLI: help from docstrings, unknown commands and flags, and the real process's exit status and stderr."""

import ast
import dataclasses
import inspect
import os
import re
import subprocess
import sys

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


def test_runtime_note_warns_without_a_gpu_and_says_how_to_get_one(monkeypatch):
    monkeypatch.setattr(ft, "device_available", lambda name: False)
    assert "no GPU" in ft.runtime_note() and "Runtime > Change runtime type" in ft.runtime_note()
    monkeypatch.setattr(ft, "device_available", lambda name: name == "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Tesla T4")
    assert ft.runtime_note() == "training on the GPU: Tesla T4"


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


def test_the_file_reads_in_pipeline_order_and_nothing_calls_into_a_later_section():
    """fashion_trainer.py's sections come in the documented order, and no code in one uses a name defined in a later
    section (the CLI at the end may use all of them)."""
    source = (ROOT / "fashion_trainer.py").read_text()
    tree = ast.parse(source)
    headers = [(i + 1, line.split(" ", 2)[2]) for i, line in enumerate(source.splitlines()) if line.startswith("# " + "-" * 77 + " ")]
    order = ["basics", "data", "prepare", "model", "devices and precision", "training", "evaluation", "inspection", "CLI"]
    assert [title.split(":")[0] for _, title in headers] == order

    def section(line: int) -> int:
        return max((i for i, (start, _) in enumerate(headers) if start <= line), default=-1)

    defined = {}
    for node in tree.body:
        names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else []
        names += [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        for name in names:
            defined[name] = section(node.lineno)
    late = []
    for node in tree.body:
        here = section(node.lineno)
        local = {a.arg for a in ast.walk(node) if isinstance(a, ast.arg)}  # parameters such as `train: bool` shadow
        local |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and node is not n}
        local -= {t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)}
        for used in ast.walk(node):
            if isinstance(used, ast.Name) and used.id not in local and defined.get(used.id, -1) > here and here != len(order) - 1:
                late.append(f"{used.id} (section {order[defined[used.id]]}) used in {order[here]} at line {used.lineno}")
    assert not late, late


def test_the_readme_stays_a_users_page():
    """The README is for users and at most 15 KB; research goes to docs/."""
    assert len((ROOT / "README.md").read_bytes()) <= 15 * 1024


def test_every_mutation_of_scripts_mutate_names_one_line_the_trainer_has():
    """scripts/mutate.py is not run in CI (minutes); this keeps its lines in step with the code they break."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import mutate

    source = (ROOT / "fashion_trainer.py").read_text()
    assert [name for name, line, _, _ in mutate.MUTATIONS if source.count(line) != 1] == []
