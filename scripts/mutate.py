"""Mutation check: break fashion_trainer.py one line at a time and run the tests that claim the behaviour.

    python scripts/mutate.py              # every mutation below (about 10 minutes on 2 cores)
    python scripts/mutate.py resume evaluate   # only those whose name contains one of the words

Each mutation is one line changed to what a slip of the hand would write. A mutation the tests do not catch
("survived") is a behaviour no test guards: add a test that fails on it, or explain below why it is equivalent. The
copy under test lives in a temporary folder; the repository is never changed. Exit status 1 if any survived.
"""

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, the line as it is, the line broken, the tests that must catch it)
MUTATIONS = [
    # a run saved by the code before, the notebook's helpers, the recipe's constants
    (
        "checkpoint: an earlier development version's file read",
        "if version != FORMAT_VERSION:",
        "if isinstance(version, int) and version > FORMAT_VERSION:",
        "tests/test_compat.py -k another_format",
    ),
    (
        "show: --wrong shows the right ones",
        "missed = (predictions != labels).nonzero().flatten()[:n]",
        "missed = (predictions == labels).nonzero().flatten()[:n]",
        "tests/test_inspection.py -k wrong",
    ),
    (
        "run name ignores the values",
        'words.append(re.sub(r"[^A-Za-z0-9._+-]", "", name + value))',
        'words.append(re.sub(r"[^A-Za-z0-9._+-]", "", name))',
        "tests/test_cli.py -k run_name",
    ),
    (
        "evaluate: every digit turned",
        "unsure = (single.max(1).values < confidence).nonzero().flatten()",
        "unsure = torch.arange(len(single))",
        "tests/test_evaluate.py -k averages",
    ),
    (
        "budget: share ignored",
        "return max(epochs_done / (config.budget_cap * DATASETS[config.dataset].epochs), seconds / (config.budget_fraction * config.budget))",
        "return max(epochs_done / (config.budget_cap * DATASETS[config.dataset].epochs), seconds / config.budget)",
        "tests/test_resume.py -k budget_runs_end",
    ),
    # checkpoint loading
    (
        "checkpoint: newer format accepted",
        "version > FORMAT_VERSION:",
        "version > FORMAT_VERSION + 1:",
        "tests/test_evaluate.py -k bad_checkpoints",
    ),
    (
        "checkpoint: pickles run",
        'lambda: torch.load(path, map_location="cpu", weights_only=True), path, "tensors and plain values", "checkpoint"',
        'lambda: torch.load(path, map_location="cpu", weights_only=False), path, "tensors and plain values", "checkpoint"',
        "tests/test_evaluate.py -k malicious",
    ),
    (
        "checkpoint: missing keys not checked",
        "missing = [f.name for f in dataclasses.fields(cls) if f.name not in raw and f.default is dataclasses.MISSING]",
        "missing = []",
        "tests/test_evaluate.py -k bad_checkpoints",
    ),
    # evaluate and prediction
    (
        "evaluate: no test-time turns",
        "degrees, confidence = list(ckpt.model_config.test_turns) if tta else [], ckpt.model_config.test_turns_below",
        "degrees, confidence = [], ckpt.model_config.test_turns_below",
        "tests/test_evaluate.py -k turns",
    ),
    (
        "evaluate: warns on every run",
        "if expected and expected != test_fingerprint:",
        "if True:",
        "tests/test_evaluate.py -k one_line",
    ),
    (
        "evaluate: counts the wrong ones",
        "confidence).argmax(1)\n    correct, total = int((predictions == data.test_labels).sum())",
        "confidence).argmax(1)\n    correct, total = int((predictions != data.test_labels).sum())",
        "tests/test_evaluate.py -k one_line",
    ),
    (
        "predict: averages the turns wrongly",
        "probs[unsure] = sum(views) / len(angles)",
        "probs[unsure] = sum(views)",
        "tests/test_evaluate.py -k averages",
    ),
    (
        "predict: pictures not inverted",
        "ink = 1 - gray if border.mean() > 0.5 else gray.clone()",
        "ink = gray.clone()",
        "tests/test_inspection.py -k predict",
    ),
    # data reading and discovery
    ("data: NaN pixels read", "if not np.isfinite(images).all():", "if False:", "tests/test_data.py -k broken_data"),
    (
        "data: labels out of range read",
        "if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):",
        "if False:",
        "tests/test_data.py -k broken_data",
    ),
    (
        "data: checksum not verified",
        'if checksum is not None and not checksum_matches(tmp, checksum, gzipped=dest.suffix == ".gz"):',
        "if False:",
        "tests/test_data.py -k download",
    ),
    (
        "data: changed training data continued",
        'if fingerprint(data.train_images, data.train_labels) != last.data_fingerprint["train"]:',
        "if False:",
        "tests/test_resume.py -k changed",
    ),
    # prepare
    (
        "prepare: course mode turns each image on its own",
        "train_angles, test_angles = chunk_angles[:-1].repeat_interleave(size), chunk_angles[-1].expand(len(test_x))",
        "train_angles, test_angles = random_angles(n_train, plan['degrees'], generator), chunk_angles[-1].expand(len(test_x))",
        "tests/test_data.py -k course",
    ),
    (
        "prepare: the bundled sample's digits drawn",
        'pool = np.flatnonzero(~sample_digits(arrays["train_labels"]))',
        'pool = np.arange(len(arrays["train_labels"]))',
        "tests/test_data.py -k prepare",
    ),
    # the training state's save and restore
    (
        "state: augmentation stream not restored",
        'self.generator.set_state(training["generator"])',
        "pass",
        "tests/test_training.py -k interrupted",
    ),
    ("state: global RNG not restored", 'torch.set_rng_state(training["torch_rng"])', "pass", "tests/test_training.py -k interrupted"),
    ("state: optimizer keeps the checkpoint's stepping", "group.update(own)", "pass", "tests/test_resume.py -k 't4 or laptop'"),
    ("state: files not synced", "os.fsync(f.fileno())", "pass", "tests/test_resume.py -k whole_last_pt"),
    (
        "state: no last.prev.pt",
        'self.path / "last.pt", previous=self.path / "last.prev.pt")',
        'self.path / "last.pt", previous=None)',
        "tests/test_training.py -k damaged",
    ),
    (
        "state: batch norm not re-measured",
        "recalibrate_batch_norm(state.final, x_train[: config.batch_norm_images], device, state.memory_format, state.amp)",
        "pass",
        "tests/test_training.py -k large_batch",
    ),
    ("step: no zero_grad", "    state.optimizer.zero_grad(set_to_none=True)", "    pass", "tests/test_training.py -k our_step"),
    (
        "step: no backward",
        "    state.scaler.scale(loss).backward()",
        "    state.scaler.scale(loss)",
        "tests/test_training.py -k our_step",
    ),
    ("step: no optimizer step", "    state.scaler.step(state.optimizer)", "    pass", "tests/test_training.py -k our_step"),
    (
        "step: trains the uncompiled model",
        "self.net = torch.compile(self.ddp, dynamic=False) if config.compile else self.ddp",
        "self.net = self.ddp",
        "tests/test_training.py -k compile",
    ),
    (
        "schedule: none decays",
        "    return config.lr, None\n",
        "    return config.lr * (1 - p), None\n",
        "tests/test_training.py -k scheduler",
    ),
    ("best: no tie margin", "return math.sqrt(p * (1 - p) / max(n_val, 1))", "return 0.0", "tests/test_training.py -k tie"),
    (
        "budget: the clock ignored",
        "return max(epochs_done / (config.budget_cap * DATASETS[config.dataset].epochs), seconds / (config.budget_fraction * config.budget))",
        "return epochs_done / (config.budget_cap * DATASETS[config.dataset].epochs)",
        "tests/test_resume.py -k budget_runs_end",
    ),
    (
        "budget: the last saving not counted ahead",
        "self.tail, self.tail_began = time.perf_counter() - self.tail_began, None",
        "self.tail, self.tail_began = 0.0, None",
        "tests/test_resume.py -k budget",
    ),
    (
        "budget: a spent budget still steps",
        "        if done >= 1 and i:",
        "        if False:",
        "tests/test_resume.py -k budget",
    ),
    (
        "budget: the estimate ignores the share the steps take",
        "fits = config.budget_fraction * config.budget / epoch",
        "fits = config.budget / epoch",
        "tests/test_resume.py -k how_many_fit",
    ),
    (
        "budget: no cap on a fast device",
        "return max(epochs_done / (config.budget_cap * DATASETS[config.dataset].epochs), seconds / (config.budget_fraction * config.budget))",
        "return max(epochs_done / (2 * config.budget_cap * DATASETS[config.dataset].epochs), seconds / (config.budget_fraction * config.budget))",
        "tests/test_resume.py -k fast_device",
    ),
    (
        "schedule: steps a whole epoch ahead",
        "return clock.step_begins(state.epoch + steps_into_epoch / steps_per_epoch)",
        "return clock.step_begins(state.epoch + 1 + steps_into_epoch / steps_per_epoch)",
        "tests/test_training.py -k schedules_learning_rate",
    ),
    (
        "step: the merged last batch compiled too",
        "net = state.net if len(x) == state.full_batch else state.ddp",
        "net = state.net",
        "tests/test_training.py -k compile",
    ),
    (
        "budget: the start counted",
        "            self.began = time.perf_counter()",
        "            self.began = self.opened",
        "tests/test_resume.py -k budget_runs_end",
    ),
    (
        "budget: a tenth of an epoch let through",
        "if fits < 0.25:",
        "if fits < 0.1:",
        "tests/test_resume.py -k quarter",
    ),
    (
        "p4: the gradient of one turn only",
        "return grad.reshape(-1)[inverse].sum(0).view(ctx.weight_shape), None, None",
        "return grad.reshape(-1)[inverse[0]].view(ctx.weight_shape), None, None",
        "tests/test_model.py -k p4",
    ),
    (
        "epoch: every step of a block trains its first batch",
        "losses.append(train_step(state, config, *block[i % config.augment_block], lr, beta1))",
        "losses.append(train_step(state, config, *block[0], lr, beta1))",
        "tests/test_training.py -k every_training_image",
    ),
    (
        "torchrun: every process warps rank 0's share",
        "places = torch.cat([torch.arange(start, end)[ranks.rank :: ranks.world] for start, end in spans]).to(gen.device) - first",
        "places = torch.cat([torch.arange(start, end)[:: ranks.world] for start, end in spans]).to(gen.device) - first",
        "tests/test_distributed.py -k warps",
    ),
    (
        "compile: no compiler let through",
        "if config.compile and not any(name and shutil.which(name) for name in compilers):",
        "if False:",
        "tests/test_training.py -k without_a_compiler",
    ),
    (
        "your model: a checkpoint imports the file it names",
        "        raise ModelNotNamed(checkpoint.path, saved.user_model)",
        "        spec = saved.user_model",
        "tests/test_your_model.py -k never",
    ),
    (
        "your model: its forward not tried before a step",
        "            out = model(images)",
        "            out = torch.zeros(len(images), num_classes)",
        "tests/test_your_model.py -k mistake",
    ),
    (
        "your model: its output's shape not checked",
        "if not isinstance(out, Tensor) or not out.is_floating_point() or tuple(out.shape) != (len(images), num_classes):",
        "if not isinstance(out, Tensor):",
        "tests/test_your_model.py -k mistake",
    ),
    (
        "your model: given channels-last batches",
        "channels_last = self.use.channels_last and isinstance(self.model, CNN)",
        "channels_last = self.use.channels_last",
        "tests/test_your_model.py -k laid_out",
    ),
    (
        "your model: a changed file not warned about",
        "if saved is not None and user.sha256 != saved.user_sha256:",
        "if False:",
        "tests/test_your_model.py -k changed",
    ),
    (
        "your model: another class taken for the run's",
        'if saved is not None and user.spec.rpartition(":")[2] != saved.user_model.rpartition(":")[2]:',
        "if False:",
        "tests/test_your_model.py -k changed",
    ),
    (
        "training: a NaN loss trained on",
        "if not all(map(math.isfinite, losses)):",
        "if False:",
        "tests/test_training.py -k nan",
    ),
    (
        "budget: a resumed run forgets its seconds",
        "clock = TrainingClock(config, device, ranks, steps_per_epoch, started, state.seconds_so_far())",
        "clock = TrainingClock(config, device, ranks, steps_per_epoch, started, 0.0)",
        "tests/test_resume.py -k killed_budget",
    ),
    (
        "predict: folding draws initial weights from the run's random stream",
        "with torch.random.fork_rng(devices=[]):  # its initial weights",
        "if True:  # its initial weights",
        "tests/test_model.py -k random_streams",
    ),
    (
        "lr: the batch-normed layers start alike at any --lr",
        "layer.weight.mul_(relative)",
        "pass",
        "tests/test_training.py -k another_lr",
    ),
    (
        "lr: the hidden layer keeps its scale",
        "isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d))",
        "isinstance(norm, nn.BatchNorm2d)",
        "tests/test_training.py -k another_lr",
    ),
    (
        "lr: the decay per step follows --lr",
        "weight_decay=config.weight_decay / relative",
        "weight_decay=config.weight_decay",
        "tests/test_training.py -k another_lr",
    ),
    (
        "curve: not drawn after an early stop",
        'self.curve.draw(self.state.history, self.path / "training_curve.png", final=True)',
        "pass",
        "tests/test_training.py -k early_stopping",
    ),
    (
        "curve: the last epoch left undrawn",
        "if epoch == self.epoch or not (final or time.perf_counter() >= self.next_at):",
        "if epoch == self.epoch or not time.perf_counter() >= self.next_at:",
        "tests/test_training.py -k curve",
    ),
    (
        "curve: drawn after every epoch whatever it costs",
        "self.next_at, self.epoch = began + 10 * (time.perf_counter() - began), epoch",
        "self.next_at, self.epoch = began, epoch",
        "tests/test_training.py -k curve",
    ),
    (
        "predict: batch norm folded without its shift",
        "layers[i].bias.copy_((bias - norm.running_mean) * scale + norm.bias)",
        "layers[i].bias.copy_(bias - norm.running_mean * scale)",
        "tests/test_model.py -k folding",
    ),
    (
        "devices: bf16 on every GPU",
        "return torch.bfloat16 if native_bf16_gpu(device) else torch.float16",
        "return torch.bfloat16",
        "tests/test_devices.py -k capability",
    ),
    (
        "cli: flags without help",
        'command.__doc__ = command.__doc__.rstrip() + "".join(',
        'command.__doc__ = command.__doc__.rstrip() or "".join(',
        "tests/test_cli.py -k help",
    ),
    # resume
    (
        "resume: a finished run trained again",
        'return training["done"] >= 1 or stopped_early(training["epoch"], training["best_epoch"], last.train_config.patience)',
        'return stopped_early(training["epoch"], training["best_epoch"], last.train_config.patience)',
        "tests/test_training.py -k continues",
    ),
    (
        "resume: best.pt not restored",
        'if training["best_epoch"] != training["epoch"]:',
        "if True:",
        "tests/test_resume.py -k between_last_pt_and_best",
    ),
    (
        "resume: other content overwritten",
        'if names is None or not all(n in RUN_FILES or n.endswith(".tmp") for n in names):',
        "if names is None:",
        "tests/test_resume.py -k leftover",
    ),
    ("resume: tiny batches under torchrun", "if config.batch_size < 2 * world:", "if False:", "tests/test_resume.py -k batch_too_small"),
    (
        "resume: other settings continued",
        "for name in [n for n in moved if n in given][:1]:",
        "for name in []:",
        "tests/test_training.py -k continues",
    ),
    (
        "resume: a changed default refuses the run",
        "for name in [n for n in moved if n in given][:1]:",
        "for name in moved[:1]:",
        "tests/test_training.py -k code_update",
    ),
    (
        "resume: --if_unfinished still an error",
        'if not _check_bool("if_unfinished", if_unfinished):',
        "if True:",
        "tests/test_training.py -k same_train_command",
    ),
    (
        "prepare: --if_missing keeps other settings quiet",
        "other = [key for key in plan if before.get(key) != plan[key]]",
        "other = []",
        "tests/test_data.py -k if_missing",
    ),
    # the CLI's error path and faults of the machine
    ("cli: usage errors exit 1", "        return exc.exit_code", "        return 1", "tests/test_training.py -k bad_train_arguments"),
    (
        "cli: unexpected errors as tracebacks",
        "    except Exception as exc:  # a bug or a fault nobody foresaw: still one line, the traceback on request",
        "    except ZeroDivisionError as exc:",
        "tests/test_faults.py -k unexpected",
    ),
    (
        "faults: temporary file left behind",
        "                tmp.unlink(missing_ok=True)\n    except OSError",
        "                pass\n    except OSError",
        "tests/test_faults.py",
    ),
    (
        "faults: unwritable --out found late",
        "    if launched.main:\n        check_writable(run_dir)",
        "    if False:\n        check_writable(run_dir)",
        "tests/test_faults.py -k unwritable",
    ),
    (
        "faults: a vanished folder recreated",
        "            if make_folder:\n                path.parent.mkdir",
        "            if True:\n                path.parent.mkdir",
        "tests/test_faults.py -k folder_that_is_gone",
    ),
    ("faults: a replaced run folder written", "check_still_there(self.path, self.opened)", "pass", "tests/test_faults.py -k drive_mount"),
    (
        "faults: the folder synced, not the file",
        "                os.fsync(f.fileno())",
        "                sync_folder(path.parent)",
        "tests/test_resume.py -k whole_last_pt",
    ),
    (
        "faults: written in place, not renamed",
        '            with open(tmp, "wb") as f:',
        '            with open(path, "wb") as f:',
        "tests/test_resume.py -k whole_last_pt",
    ),
    (
        "state: best.pt written before last.pt",
        'dataclasses.replace(best, training_state=state.state_dict()).save(self.path / "last.pt", previous=self.path / "last.prev.pt")\n            if improved:\n                best.save(self.path / "best.pt")',
        'if improved:\n                best.save(self.path / "best.pt")\n            dataclasses.replace(best, training_state=state.state_dict()).save(self.path / "last.pt", previous=self.path / "last.prev.pt")',
        "tests/test_resume.py -k whole_last_pt",
    ),
    (
        "state: no fall-back to last.prev.pt",
        'for name in ("last.pt", "last.prev.pt"):',
        'for name in ("last.pt",):',
        "tests/test_training.py -k falls_back",
    ),
    (
        "resume: a continued run not checked first",
        "    check_before_reading(config, run_dir)\n    user = named_model(",
        "    pass\n    user = named_model(",
        "tests/test_faults.py -k continued_run",
    ),
    (
        "state: optimizer values kept as saved",
        "                    values[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)",
        "                    values[key] = value",
        "tests/test_resume.py -k loaded_optimizer",
    ),
    (
        "state: step counters kept as saved",
        '                    values[key] = value.to(param.device if on_device else "cpu", torch.float32)',
        "                    values[key] = value",
        "tests/test_resume.py -k loaded_optimizer",
    ),
    (
        "batches: one image a process",
        "if len(starts) > 1 and n - starts[-1] < 2 * world:",
        "if len(starts) > 1 and n - starts[-1] < 2:",
        "tests/test_resume.py -k torchrun",
    ),
    (
        "ema: the average never moves",
        "update_ema(state.ema_pairs, min(config.ema, (1 + n) / (config.ema_warmup + n)))",
        "update_ema(state.ema_pairs, 1.0)",
        "tests/test_training.py",
    ),
    ("early stop: never", "return bool(patience) and epoch - best_epoch >= patience", "return False", "tests/test_training.py -k early"),
    ("sigterm: not caught", "        signal.signal(signal.SIGTERM, interrupt)", "        pass", "tests/test_training.py -k sigterm"),
    (
        "mc_dropout: the entropy in bits",
        "entropy = float(-(mean * mean.clamp_min(1e-12).log()).sum())",
        "entropy = float(-(mean * mean.clamp_min(1e-12).log2()).sum())",
        "tests/test_inspection.py -k histogram",
    ),
    (
        "evaluate: confusion matrix transposed",
        "confusion = torch.bincount(data.test_labels * len(classes) + predictions,",
        "confusion = torch.bincount(predictions * len(classes) + data.test_labels,",
        "tests/test_evaluate.py -k hand",
    ),
    (
        "evaluate: per-class share of the predictions",
        'say(f"  {name:>12}: {100 * row[i] / max(int(row.sum()), 1):6.2f}% of {int(row.sum())}")',
        'say(f"  {name:>12}: {100 * row[i] / max(int(confusion[:, i].sum()), 1):6.2f}% of {int(row.sum())}")',
        "tests/test_evaluate.py -k hand",
    ),
    ("faults: no plain words", 'errno.ENOSPC: "no space left on the disk",', 'errno.ENOSPC: "error",', "tests/test_faults.py -k mid_run"),
    (
        "resume: the code's model, not the run's",
        "model_config = model_of(config, user) if last is None else last.model_config  # a run keeps its model",
        "model_config = model_of(config, user)",
        "tests/test_training.py -k code_update",
    ),
    (
        "curve: validation accuracy as a fraction",
        'acc.plot(ends, [100 * e["val_accuracy"] for e in history["epochs"]], "o-", color="tab:orange", label="validation accuracy")',
        'acc.plot(ends, [e["val_accuracy"] for e in history["epochs"]], "o-", color="tab:orange", label="validation accuracy")',
        "tests/test_training.py -k curve_shows",
    ),
    (
        "show: a panel shows another image",
        "        _imshow(ax, images[i])",
        "        _imshow(ax, images[(i + 1) % len(images)])",
        "tests/test_inspection.py -k first_misclassified",
    ),
    (
        "setup report: the CPU's precision named for every device",
        """lines.append(f"precision: {said[precision_name(autocast_dtype(device, 'auto'))]} (train's --precision=auto here)")""",
        """lines.append(f"precision: {said[precision_name(autocast_dtype(torch.device('cpu'), 'auto'))]} (train's --precision=auto here)")""",
        "tests/test_cli.py -k setup_report",
    ),
    (
        "evaluate: the confusion picture's counts transposed",
        "                ax.text(j, i, int(confusion[i, j]),",
        "                ax.text(i, j, int(confusion[i, j]),",
        "tests/test_evaluate.py -k hand",
    ),
    # compare and lr_find
    (
        "compare: an unfinished run shown as finished",
        'status = f"{len(epochs)}{of}" + ("" if done else " unfinished")',
        'status = f"{len(epochs)}{of}"',
        "tests/test_compare.py -k side_by_side",
    ),
    (
        "compare: shared settings shown too",
        "differ = [n for n in names if len({repr(f.get(n)) for f in flat}) > 1]",
        "differ = names",
        "tests/test_compare.py -k side_by_side",
    ),
    (
        "evaluate: the recorded result is not the printed one",
        'result = {"accuracy": correct / max(total, 1), "correct": correct, "total": total, "epoch": ckpt.metrics.get("epoch")}',
        'result = {"accuracy": correct / total / 2, "correct": correct, "total": total, "epoch": ckpt.metrics.get("epoch")}',
        "tests/test_compare.py -k side_by_side",
    ),
    (
        "lr_find: the lowest loss itself",
        "return lrs[lowest] / 10 if lowest and losses[lowest] < losses[0] else None",
        "return lrs[lowest] if lowest and losses[lowest] < losses[0] else None",
        "tests/test_compare.py -k lr_find",
    ),
    (
        "lr_find: never stops",
        "if not math.isfinite(loss) or losses[-1] > 4 * lowest:",
        "if not math.isfinite(loss):",
        "tests/test_compare.py -k blows_up",
    ),
]


def copy_repo(dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the repository."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in files.stdout.splitlines():
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def main(words: list[str]) -> int:
    source = (ROOT / "fashion_trainer.py").read_text()
    chosen = [m for m in MUTATIONS if not words or any(w in m[0] for w in words)]
    survived = []
    with tempfile.TemporaryDirectory() as work:
        copy_repo(Path(work))
        for name, old, new, tests in chosen:
            if source.count(old) != 1:
                print(f"STALE     {name}: the line is not in fashion_trainer.py exactly once; update scripts/mutate.py")
                survived.append(name)
                continue
            (Path(work) / "fashion_trainer.py").write_text(source.replace(old, new))
            started = time.perf_counter()  # -n 0: a few tests run faster in one process than in workers that each import torch
            result = subprocess.run(
                f"{sys.executable} -m pytest -x -q -n 0 -p no:cacheprovider {tests}", shell=True, cwd=work, capture_output=True, text=True
            )
            # only failing tests kill a mutation: 2-5 are pytest's own troubles (interrupted, usage, no tests)
            verdict = {0: "SURVIVED", 1: "killed"}.get(result.returncode, f"ERROR {result.returncode}")
            print(f"{verdict:9} {name} ({time.perf_counter() - started:.0f} s: {tests})", flush=True)
            if verdict != "killed":
                survived.append(name)
    print(f"{len(chosen) - len(survived)} killed, {len(survived)} survived of {len(chosen)}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
