"""fashion_trainer: train and evaluate an image classifier, ours or yours, on corrupted MNIST (and MNIST, Fashion-MNIST,
CIFAR-10) from one file.

Read it top-down: the story of a run comes first, the machinery that keeps runs alive after it.
  settings      TrainConfig (every `train` flag) and DATASETS (each dataset's recipe)
  data          the dataset in memory, the course's shard turns undone, the validation split, the warps of a batch
  model         the built-in CNN, plain or p4; a model file of yours takes its place (--model)
  training      TrainingState, one epoch of steps, fit: train, recalibrate batch norm, validate, record, save
  evaluation    `evaluate`: test accuracy, per class, the confusion matrix
  commands      `train` and the entry point
  APPENDIX      run folders and checkpoints, devices and torchrun, safe writes and errors, data files and downloads,
                `prepare`, pictures, `compare` and `lr_find`, inspection, your model, notebook helpers

One word per thing:
  recipe        a dataset's entry in DATASETS: its flags' defaults, its warm-up, augmentation and model config
  augmentation  the random warps of every training batch: turn, zoom, shift, mirror, slant, stretch, cutout
  turn          a rotation by so many degrees: the course turns each shard (file) of digits by one angle, augmentation and
                evaluate's test turns turn images; p4 copies are each filter at four quarter turns (P4Conv)
  model         the nn.Module trained: the built-in CNN, or the class of a model file you name (--model)
  model config  what the model is (ModelConfig): its layers or your file's class, its input, classes and statistics
  last.pt       a run's newest checkpoint; the training state inside it (weights, optimizer, random streams, history)
                continues the run; `last` is one loaded. best.pt holds the best validated weights alone
  done          the fraction of a run done, 0 to 1: of its epochs, or of a --budget's seconds
  world         the number of torchrun processes; rank 0 alone writes

Ways to run it:
  python fashion_trainer.py train                       CPU, Apple MPS or one CUDA GPU (--device=auto picks)
  !python fashion_trainer.py train --lr=1e-4            in Google Colab (see colab_runner.ipynb)
  torchrun --nproc_per_node=N fashion_trainer.py train  data-parallel on N GPUs (or CPU processes)
  python fashion_trainer.py COMMAND --help              every flag of a command, explained
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import dataclasses
import difflib
import errno
import gc
import gzip
import hashlib
import importlib.util
import inspect
import io
import itertools
import json
import math
import os
import pickle
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

# ----------------------------------------------------------------------------- settings: every flag (TrainConfig), each dataset's recipe (DATASETS)


FORMAT_NAME = "fashion_trainer"
FORMAT_VERSION = 2  # of checkpoints and history.json: an earlier development version's files are refused, never translated
ROOT = Path(__file__).resolve().parent
DIGITS = [str(d) for d in range(10)]


@dataclass(frozen=True)
class Augmentation:
    """A dataset's random warps of every training batch, each image by its own amounts (augment_batch)."""

    degrees: float = 0.0  # turn by up to ± this
    shift: float = 0.0  # shift by up to ± this fraction of the image side
    scale: float = 0.0  # zoom by up to ± this fraction
    mirror: bool = False  # mirror half the images left to right
    slant: float = 0.0  # shear by up to ± this
    stretch: float = 0.0  # stretch one axis by up to ± this fraction
    cutout: int = 0  # blank a square of about this many pixels a side (0: none)
    nearest: float = 0.0  # this fraction of the images is resampled nearest-neighbour, as the course's digits are
    upright: bool = False  # first undo each shard's measured turn, so `degrees` spans from upright (read_corrupted_mnist)
    upright_limit: float = 50.0  # the measured shard turns are clamped to the corruption's documented range


@dataclass(frozen=True)
class ModelConfig:
    """What the model is: the built-in CNN's layers, or the class of a model file the user named; `fit` adds the input's
    shape, the classes and the training images' statistics. Every checkpoint stores it whole (never code)."""

    stages: tuple[tuple[int, ...], ...] = ((32,), (64, 64), (128, 128))  # conv widths per pooling stage (per copy with p4)
    p4: bool = False  # each 3×3 filter in four copies at quarter turns (P4Conv): for turned digits
    init_scale: float = 0.1  # convolution weights start this much smaller than PyTorch's default (see build_model)
    hidden: int = 256  # a batch-normed hidden layer: with it --lr=1e-4 reaches 99.17 % instead of 98.59 % (measured)
    dropout: float = 0.3
    test_turns: tuple[float, ...] = ()  # evaluate averages the predictions for copies turned by these degrees (none: one view)
    test_turns_below: float = 1.0  # ... for the images whose single view is less sure than this (1: all of them)
    user_model: str = ""  # a model file the user named, "PATH.py:Class" ("": the built-in CNN)
    user_args: dict = field(default_factory=dict)  # its class's keyword arguments
    user_sha256: str = ""  # of the file's text when the run started
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    mean: tuple[float, ...] = (0.0,)  # per channel, of the training images: the CNN's first layer normalises with them
    std: tuple[float, ...] = (1.0,)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's recipe: its classes and image shape, the defaults of its flags (epochs, lr, weight_decay, ema), its
    warm-up, augmentation and model, each measured for it. A run keeps the recipe it started with (its checkpoints')."""

    classes: list[str]
    input_shape: tuple[int, int, int]
    epochs: int
    augmentation: Augmentation
    model_config: ModelConfig = ModelConfig()
    lr: float = 3e-3  # the peak every recipe was measured with; another --lr scales the start and decay to it (TrainingState)
    weight_decay: float = 5e-4
    ema: float = 0.998  # decay of the moving average of the weights
    warmup_fraction: float = 0.25  # of the one-cycle schedule spent rising to --lr


DEFAULT_DATASET = "corruptedmnist"

## Turned digits need more training data than upright ones (25k turned: 99.15 %, 60k turned: 99.45 %, 25k upright:
## 99.63 %, measured): filters shared across quarter turns, slant, stretch and cut-out augmentation and real weight decay
## stand in for part of the missing data. The course turns each 5,000-digit file by one angle, so a test angle can lie 50°
## from every training angle: each shard's measured turn is undone and the digits are turned anywhere in ±60° of upright
## (the corruption is documented as up to ±50°); half are resampled nearest-neighbour, as the course's data is
## (docs/research.md, 2026-11-29). Where each dataset's files are found and fetched: DATA_FILES, in the appendix.
DATASETS = {
    DEFAULT_DATASET: DatasetSpec(
        classes=DIGITS,
        input_shape=(1, 28, 28),
        epochs=10,
        weight_decay=0.05,
        augmentation=Augmentation(degrees=60.0, shift=0.12, scale=0.1, slant=0.3, stretch=0.15, cutout=9, nearest=0.5, upright=True),
        model_config=ModelConfig(
            stages=((8,), (16, 16), (32, 32)),  # × 4 copies: the plain CNN's 32; 64, 64; 128, 128 channels
            p4=True,
            init_scale=0.03,  # 0.1: --lr=1e-4 gave 98.93 %
            test_turns=(-10, 0, 10),  # evaluate averages these turns: 99.37 -> 99.46 % and 99.45 % on seeds 0 and 1 (measured)
            test_turns_below=0.9,  # on a tuning build the turns changed no answer of the 90 % of digits above it (docs/research.md)
        ),
    ),
    "mnist": DatasetSpec(
        classes=DIGITS,
        input_shape=(1, 28, 28),
        epochs=8,
        augmentation=Augmentation(degrees=10.0, shift=0.12, scale=0.1),
    ),
    "fashionmnist": DatasetSpec(
        classes=["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
        input_shape=(1, 28, 28),
        epochs=10,
        augmentation=Augmentation(shift=0.1, mirror=True),  # clothes are upright, but mirror-symmetric
    ),
    "cifar": DatasetSpec(
        classes=["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        input_shape=(3, 32, 32),
        epochs=30,
        augmentation=Augmentation(shift=0.25, mirror=True),  # shifts of up to 4 px and flips, as in the literature
    ),
}
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("onecycle", "cosine", "step", "none")


def integer(minimum: int) -> Callable[[str, object], int]:
    """A TrainConfig check: an integer at least `minimum`."""
    return lambda name, value: _check_int(name, value, minimum)


def number(low: float, high: float = math.inf, low_open: bool = True, high_open: bool = True) -> Callable[[str, object], float]:
    """A TrainConfig check: a number between low and high (open or closed ends)."""
    return lambda name, value: _check_float(name, value, low, high, low_open, high_open)


def choice(*choices: str) -> Callable[[str, object], str]:
    """A TrainConfig check: one of a few names."""
    return lambda name, value: _check_choice(name, value, choices)


def _check_bool(name: str, value: object) -> bool:
    """A True/False flag (fire passes --flag=maybe through as a string)."""
    if not isinstance(value, bool):
        raise UsageError(f"--{name} must be True or False, got {value!r}")
    return value


def _check_keywords(name: str, value: object) -> dict:
    """Keyword arguments: a dict (fire reads --model_args='{"dropout": 0.3}' as one) or its JSON."""
    with contextlib.suppress(ValueError, TypeError):
        value = json.loads(value) if isinstance(value, str) else value
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise UsageError(f"""--{name} must be keyword arguments such as '{{"dropout": 0.3}}', got {value!r}""")
    return value


def flag(default: object, help: str, check: Callable[[str, object], object] = lambda name, value: str(value)) -> object:
    """A TrainConfig field that is a `train` flag: its default, its --help line and its check (a bad value: UsageError)."""
    return field(default=default, metadata={"help": help, "check": check})


@dataclass
class TrainConfig:
    """Every setting of a run: each `train` flag one field (None: the dataset's recipe says, see flag_help), saved whole in
    every checkpoint and history.json; a continued run rebuilds it from there."""

    dataset: str = flag(DEFAULT_DATASET, f"what to train on: {', '.join(DATASETS)}", choice(*DATASETS))
    data_dir: str | None = flag(None, "folder holding the data (default: found as the README's Data section says)")
    out: str | None = flag(None, "run folder (default: checkpoints/<name from the flags given>, so the same command continues)")
    model: str | None = flag(None, "your model: PATH.py:ClassName, or a PATH.py with one nn.Module class (default: the CNN)")
    model_args: dict | None = flag(None, """keyword arguments for your model's class, e.g. '{"dropout": 0.3}'""", _check_keywords)
    epochs: int | None = flag(None, "passes over the training images", integer(1))
    budget: float | None = flag(None, "seconds of training to fit the run in, instead of --epochs", number(0))
    lr: float | None = flag(None, "peak learning rate of the schedule", number(0))
    batch_size: int = flag(128, "images per step (the global batch under torchrun)", integer(1))
    seed: int = flag(0, "seeds the validation split, weights, order and augmentation: a CPU run repeats exactly", integer(0))
    device: str = flag("auto", f"where to train: {', '.join(DEVICES)} (auto: CUDA, then MPS, then the CPU)", choice(*DEVICES))
    precision: str = flag("auto", "fp32, bf16 or fp16 (auto: bf16/fp16 where the hardware computes in it)", choice(*PRECISIONS))
    val_fraction: float = flag(0.05, "fraction of the training images held out for validation and choosing best.pt", number(0, 1))
    patience: int = flag(0, "stop after this many epochs without a better validation accuracy (0: never)", integer(0))
    scheduler: str = flag("onecycle", f"learning-rate schedule, stepped every batch: {', '.join(SCHEDULERS)}", choice(*SCHEDULERS))
    weight_decay: float | None = flag(None, "AdamW's weight decay at the dataset's --lr (scaled by it/lr)", number(0, low_open=False))
    label_smoothing: float = flag(0.05, "label smoothing of the cross-entropy loss", number(0, 1, low_open=False))
    augment: bool = flag(True, "random warps of every training batch (the dataset's augmentation); False: none", _check_bool)
    augment_degrees: float | None = flag(None, "largest turn of the augmentation (corruptedmnist: from upright)", number(0, 180, 0, 0))
    ema: float | None = flag(None, "decay of the moving average of the weights that is validated and saved (0: off)", number(0, 1, False))
    compile: bool = flag(False, "torch.compile the model: a start of ~40 s (said, not counted by --budget), then faster steps", _check_bool)
    # Filled in by resolved() and saved, so that a continued run keeps them even if the dataset's recipe changes later:
    augmentation: Augmentation | None = None  # the dataset's augmentation in use (None: --augment=False)
    warmup_fraction: float | None = None  # the dataset's
    world: int = 1  # processes under torchrun
    # The recipe's inner numbers: each was measured, none is a knob a user should need, and a run keeps those it started with.
    ema_warmup: float = 10.0  # the average's decay ramps as (1 + step) / (ema_warmup + step): short runs average recent steps
    batch_norm_images: int = 2048  # training images the batch-norm statistics are re-measured on before each validation
    augment_block: int = 16  # batches warped at once: the warp's small operations then come once every 16 steps
    budget_fraction: float = 0.97  # --budget's steps take this fraction of its seconds (the last validation and save the rest)
    budget_cap: int = 4  # a --budget run trains at most budget_cap × the dataset's epochs: beyond, a fast GPU only overfits

    def resolved(self) -> TrainConfig:
        """This config checked flag by flag (a bad one is a UsageError), with the dataset's recipe filled in."""
        if self.budget is not None and self.epochs is not None:
            raise UsageError("--budget sets the length of the run itself; leave --epochs out (or --budget)")
        flags = [f for f in dataclasses.fields(self) if "check" in f.metadata]
        checked = {f.name: getattr(self, f.name) for f in flags}  # a flag left at None takes the dataset's recipe
        checked |= {f.name: f.metadata["check"](f.name, checked[f.name]) for f in flags if not (checked[f.name] is None is f.default)}
        spec = DATASETS[checked["dataset"]]
        recipe = {n: getattr(spec, n) for n in ("lr", "weight_decay", "ema") if checked[n] is None}
        recipe["epochs"] = spec.epochs if checked["epochs"] is None and checked["budget"] is None else checked["epochs"]
        degrees = {} if checked["augment_degrees"] is None else {"degrees": checked["augment_degrees"]}
        augmentation = dataclasses.replace(spec.augmentation, **degrees) if checked["augment"] else None
        return dataclasses.replace(self, **checked | recipe, warmup_fraction=spec.warmup_fraction, augmentation=augmentation)

    @classmethod
    def from_dict(cls, saved: dict) -> TrainConfig:
        """A config saved in a checkpoint, its augmentation as the dataclass it was."""
        config = cls(**{name: tuples(value) for name, value in saved.items()})
        return dataclasses.replace(config, augmentation=config.augmentation and Augmentation(**config.augmentation))


def flag_help(f: dataclasses.Field) -> str:
    """A flag's --help line: its own, and where the dataset's recipe sets its default, that default."""
    spec = DATASETS[DEFAULT_DATASET]
    recipe = f.default is None and f.name in {field.name for field in dataclasses.fields(DatasetSpec)}
    return f.metadata["help"] + (f" (default: the dataset's, {getattr(spec, f.name):g} for {DEFAULT_DATASET})" if recipe else "")


def takes_train_flags(names: str = "") -> Callable:
    """A command that also takes these `train` flags (space-separated; none named: all) as TrainConfig defines them: fire
    reads a command's flags from its signature and their --help lines from its docstring's Args, both made here."""

    def command_with_flags(command: Callable) -> Callable:
        fields = [f for f in dataclasses.fields(TrainConfig) if "help" in f.metadata and (not names or f.name in names.split())]
        flag = inspect.Parameter.KEYWORD_ONLY
        own = [p.replace(kind=flag) for p in inspect.signature(command).parameters.values() if p.kind is not p.VAR_KEYWORD]
        command.__signature__ = inspect.Signature(
            [inspect.Parameter(f.name, flag, default=f.default, annotation=f.type) for f in fields] + own
        )
        command.__doc__ = command.__doc__.rstrip() + "".join(f"\n        {f.name}: {flag_help(f)}" for f in fields) + "\n"
        return command

    return command_with_flags


# ----------------------------------------------------------------------------- data: the dataset in memory, its shard turns undone, the validation split, the warps


@dataclass
class Data:
    """A dataset held whole in memory: float images [N, C, H, W] and int64 labels per split."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: list[str]
    source: str
    shard_ids: Tensor  # which file each training image came from (the course turns a file as a whole)

    @classmethod
    def of(cls, train: list[tuple[Tensor, Tensor]], test: tuple[Tensor, Tensor], classes: list[str], source: object, shape: tuple) -> Data:
        """A dataset from its training files' (images, labels) (none: an empty training split of images of `shape`) and test split."""
        train = train or [(torch.zeros(0, *shape), torch.zeros(0, dtype=torch.int64))]
        shard_ids = torch.cat([torch.full((len(y),), i) for i, (_, y) in enumerate(train)])
        return cls(torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), *test, classes, str(source), shard_ids)


def _check_dataset(name: object) -> DatasetSpec:
    """The spec of a --dataset name; an unknown one is a usage error listing the valid ones."""
    if name not in DATASETS:
        raise UsageError(f"--dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    return DATASETS[name]


def load_data(dataset: str, data_dir: str | None, train: bool = True) -> Data:
    """Find a dataset (downloading it if needed) and read it whole, or only its test split (train=False)."""
    _check_dataset(dataset)
    return read_dataset(dataset, locate(dataset, data_dir), train)


def read_dataset(dataset: str, folder: Path, train: bool = True) -> Data:
    """Read a dataset's files in `folder` into memory as DATA_FILES says they are laid out (train=False: the test split alone)."""
    reader = {"course": read_corrupted_mnist, "idx": read_idx_dataset, "cifar": read_cifar}[DATA_FILES[dataset].reader]
    return reader(folder, DATASETS[dataset].classes, train=train)


# The heart of corrupted MNIST. The course's generator turns each 5,000-digit shard (file) by one angle, so its test digits
# share an angle that can lie 50° from every training shard's. Each shard's angle is measured from its digits' ink (second
# moments, class by class) and undone before the augmentation turns every digit anywhere in ±60° of upright.
def upright_turns(data: Data, train_idx: Tensor, augmentation: Augmentation | None) -> Tensor | None:
    """For an `upright` augmentation, the turn undoing each training image's shard angle: its random turn then spans from upright."""
    if augmentation is None or not augmentation.upright:
        return None
    limit = augmentation.upright_limit
    return -shard_angles(data.train_images, data.train_labels, data.shard_ids).clamp(-limit, limit)[data.shard_ids[train_idx]]


def shard_angles(images: Tensor, labels: Tensor, shards: Tensor) -> Tensor:
    """Each shard's angle in degrees against upright MNIST, class by class (a shard of digits turned at random: about 0)."""
    upright = torch.tensor(UPRIGHT_ORIENTATION, dtype=torch.complex64)
    agreement = torch.cat([ink_orientation(images[i : i + 8192]) for i in range(0, len(images), 8192)]) * upright[labels].conj()
    totals = torch.zeros(int(shards.max()) + 1, dtype=torch.complex64).index_add_(0, shards, agreement)
    return torch.rad2deg(torch.angle(totals) / 2)


# Per class, the mean of ((μ20 - μ02) + 2iμ11) / (μ20 + μ02) of the ink of upright MNIST training digits (second moments;
# scripts/upright_orientation.py measures it): turning a digit by φ degrees turns this number by 2φ.
UPRIGHT_ORIENTATION = (
    complex(-0.109, -0.235), complex(-0.742, -0.356), complex(-0.262, -0.109), complex(-0.429, -0.073), complex(-0.120, -0.063),
    complex(-0.292, -0.247), complex(-0.315, -0.049), complex(-0.377, -0.045), complex(-0.416, -0.238), complex(-0.373, -0.010),
)  # fmt: skip


def ink_orientation(images: Tensor) -> Tensor:
    """Per image [N, 1, H, W], ((μ20 - μ02) + 2iμ11) / (μ20 + μ02) of its ink: it turns by 2φ when the image turns by φ."""
    ink = images[:, 0].float()
    h, w = ink.shape[-2:]
    ys, xs = torch.arange(h, dtype=ink.dtype).view(1, h, 1), torch.arange(w, dtype=ink.dtype).view(1, 1, w)
    mass = ink.sum((1, 2)).clamp_min(1e-6)
    dy = ys - ((ink * ys).sum((1, 2)) / mass).view(-1, 1, 1)
    dx = xs - ((ink * xs).sum((1, 2)) / mass).view(-1, 1, 1)
    mu20, mu02, mu11 = ((ink * d).sum((1, 2)) / mass for d in (dx * dx, dy * dy, dx * dy))
    return torch.complex(mu20 - mu02, 2 * mu11) / (mu20 + mu02).clamp_min(1e-6)


def split_validation(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded random indices of the training part and the validation part of the training shards."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(n * val_fraction))
    return order[n_val:], order[:n_val]


def split_for_training(data: Data, config: TrainConfig, device: torch.device, model: ModelConfig) -> tuple[tuple, tuple, ModelConfig]:
    """Training images, labels, upright turns (on the device if it holds them); the validation split; the model config, completed."""
    train_idx, val_idx = split_validation(len(data.train_images), config.val_fraction, config.seed)
    x_train, y_train = data.train_images[train_idx], data.train_labels[train_idx]
    turns = upright_turns(data, train_idx, config.augmentation)
    if DeviceUse.of(device).data_on_device:
        x_train, y_train, turns = x_train.to(device), y_train.to(device), None if turns is None else turns.to(device)
    stats = {"mean": tuple(x_train.mean(dim=(0, 2, 3)).tolist()), "std": tuple(x_train.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist())}
    model_config = dataclasses.replace(model, input_shape=tuple(x_train.shape[1:]), num_classes=len(data.classes), **stats)
    return (x_train, y_train, turns), (data.train_images[val_idx], data.train_labels[val_idx]), model_config


def batch_starts(n: int, batch_size: int, world: int = 1) -> list[int]:
    """Where each global batch starts; a last one leaving a process under two images (batch norm) joins the one before."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 2 * world:
        starts.pop()
    return starts


def augment_batch(images: Tensor, rand: Tensor, augmentation: Augmentation, turn: Tensor | None = None) -> Tensor:
    """Random turn, zoom, shift, mirroring, slant, stretch and a blanked square per image, from rand [N, 10] in [-1, 1]; a
    `nearest` fraction of the images is resampled nearest-neighbour; `turn` (degrees per image) adds to the turn."""
    a = augmentation
    mirror = rand[:, 4] > 0 if a.mirror else None
    slants, stretches = (rand[:, 5] * a.slant, 1 + rand[:, 6] * a.stretch) if a.slant or a.stretch else (None, None)
    angles = rand[:, 0] * a.degrees if turn is None else rand[:, 0] * a.degrees + turn
    warp = (angles, 1 + rand[:, 1] * a.scale, rand[:, 2:4] * a.shift, mirror, slants, stretches)
    out = affine_warp(images, *warp)
    if a.nearest:  # digits turned nearest-neighbour (the course's data) look jagged, unlike bilinear resampling's
        jagged = ((rand[:, 9] + 1) / 2 < a.nearest).view(-1, 1, 1, 1)
        out = torch.where(jagged, affine_warp(images, *warp, mode="nearest"), out)
    if a.cutout:  # blank a square of 2 * (cutout // 2) + 1 pixels a side at a random place (Cutout, DeVries & Taylor 2017)
        h, w = out.shape[-2:]
        cy = ((rand[:, 7] + 1) / 2 * (h - 1)).round().view(-1, 1, 1)
        cx = ((rand[:, 8] + 1) / 2 * (w - 1)).round().view(-1, 1, 1)
        rows, cols = torch.arange(h, device=rand.device).view(1, h, 1), torch.arange(w, device=rand.device).view(1, 1, w)
        inside = ((rows - cy).abs() <= a.cutout // 2) & ((cols - cx).abs() <= a.cutout // 2)
        out = out.masked_fill(inside.unsqueeze(1).to(out.device), 0.0)
    return out


def affine_warp(
    images: Tensor,
    angles_deg: Tensor,
    scales: Tensor | None = None,
    shifts: Tensor | None = None,
    mirror: Tensor | None = None,
    slants: Tensor | None = None,
    stretches: Tensor | None = None,
    mode: str = "bilinear",
) -> Tensor:
    """Turn (counter-clockwise, degrees), zoom, shift, mirror (where True), slant and stretch images, each by its own amount;
    mode is grid_sample's interpolation (torchvision's rotate defaults to "nearest")."""
    a = torch.deg2rad(angles_deg.float())
    s = torch.ones_like(a) if scales is None else scales
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)
    if slants is not None or stretches is not None:
        k = torch.zeros_like(a) if slants is None else slants
        r = torch.ones_like(a) if stretches is None else stretches
        zero = torch.zeros_like(a)
        theta = theta @ torch.stack([torch.stack([1 / r, k * r], 1), torch.stack([zero, r], 1)], 1)
    if mirror is not None:
        theta[:, :, 0] *= 1 - 2 * mirror.float()[:, None]  # reading x from -x flips left and right
    shift = torch.zeros(len(a), 2, 1, device=a.device) if shifts is None else shifts.view(-1, 2, 1)
    theta = torch.cat([theta, shift.to(theta)], 2).to(images.device, images.dtype)  # a no-op where the angles live with the images
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


# ----------------------------------------------------------------------------- model: the built-in CNN, plain or with p4 copies (or your model: build_model)


class Reshape(nn.Module):
    """Reshape every dimension but the batch one, e.g. Reshape(1, 28, 28) accepts [N, 784] input."""

    def __init__(self, *shape: int):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)


class Normalize(nn.Module):
    """Subtract the training mean and divide by its std, per channel (kept in the state dict)."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class P4Conv(nn.Module):
    """A 3×3 convolution whose filters come in four p4 copies, turned by 0°, 90°, 180° and 270°, as c_out × 4 channels
    [channel, copy]: a stroke detector learnt at one angle works at the other three, so turned digits teach the model with
    a quarter of the weights. lift=True takes plain images, else another P4Conv's output, whose copies a quarter turn of
    the filters also cycles: turning the image by 90° turns and cycles every feature map, nothing else (equivariance)."""

    def __init__(self, c_in: int, c_out: int, lift: bool):
        super().__init__()
        turns_in = 1 if lift else 4
        self.weight = nn.Parameter(torch.empty(c_out, c_in * turns_in, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default
        # where each entry of the full [c_out*4, c_in*turns_in, 3, 3] filter bank is taken from: one gather per step
        ids = torch.arange(self.weight.numel(), dtype=torch.float64).view(c_out, c_in, turns_in, 3, 3)
        turned = [torch.rot90(ids if lift else ids.roll(k, dims=2), k, dims=(3, 4)) for k in range(4)]
        # plain attributes, not buffers: DDP would broadcast every buffer at every step, and they never change
        self.index = torch.stack(turned, 1).reshape(c_out * 4, c_in * turns_in, 3, 3).long()
        # each turn's copies hold every weight once: where each weight went, per turn, gathers the gradient back
        per_turn = self.index.view(c_out, 4, -1).transpose(0, 1).reshape(4, -1)
        places = torch.arange(self.index.numel()).view(c_out, 4, -1).transpose(0, 1).reshape(4, -1)
        self.inverse = torch.empty_like(per_turn).scatter_(1, per_turn, places)

    def _apply(self, fn, recurse: bool = True):
        """Move (and lay out) the index with the weights, as a buffer would be."""
        super()._apply(fn, recurse)
        self.index, self.inverse = fn(self.index), fn(self.inverse)
        return self

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, TurnedFilters.apply(self.weight, self.index, self.inverse), padding=1)


class TurnedFilters(torch.autograd.Function):
    """A P4Conv's filter bank gathered from its weights; the gradient gathered back and summed over the four turns.
    Autograd's own backward of the gather scatters with a sort on CUDA: 14 % of a step's GPU time on an H200 (#35)."""

    @staticmethod
    def forward(ctx, weight: Tensor, index: Tensor, inverse: Tensor) -> Tensor:
        ctx.save_for_backward(inverse)
        ctx.weight_shape = weight.shape
        return weight.reshape(-1)[index]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad.reshape(-1)[inverse].sum(0).view(ctx.weight_shape), None, None


class MaxPool(nn.Module):
    """2×2 max pooling: without gradients on the CPU the larger of two strided halves, twice, the same numbers 3-6× faster
    than PyTorch's kernel (28 % of evaluate's forward passes), which training keeps for its fast backward."""

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad or x.device.type != "cpu":
            return F.max_pool2d(x, 2)
        h, w = x.shape[-2:]  # an odd last row or column is dropped, as max_pool2d does
        rows = torch.maximum(x[..., 0 : h - 1 : 2, :], x[..., 1::2, :])
        return torch.maximum(rows[..., 0 : w - 1 : 2], rows[..., 1::2])


def conv_bn_relu(c_in: int, c_out: int, p4: bool = False, lift: bool = False) -> list[nn.Module]:
    """A 3×3 convolution (no bias: batch norm has one; a P4Conv with p4), batch norm and ReLU."""
    conv = P4Conv(c_in, c_out, lift) if p4 else nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    return [conv, nn.BatchNorm2d(c_out * (4 if p4 else 1)), nn.ReLU(inplace=True)]


def build_model(model_config: ModelConfig, user: UserModel | None = None) -> nn.Module:
    """The model a ModelConfig describes: the built-in CNN, or the class of the model file the user named (`user`,
    imported by the command that named it: never because a checkpoint says so) built with its arguments."""
    if not model_config.user_model:
        return CNN(model_config)
    if user is None:
        raise ModelNotNamed("this run", model_config.user_model)
    return user.build(model_config.user_args)


class CNN(nn.Sequential):
    """The built-in model, a small VGG-style CNN: stages of conv-bn-relu blocks, each followed by max pooling, then a
    linear head. Its own tricks (channels-last, folded batch norm at prediction, weights scaled with --lr) are its alone."""

    def __init__(self, model_config: ModelConfig):
        c, h, w = model_config.input_shape
        layers: list[nn.Module] = [Reshape(c, h, w), Normalize(list(model_config.mean), list(model_config.std))]
        c_in, lift = c, True  # the first convolution makes p4 copies of plain images
        for i, stage in enumerate(model_config.stages):
            if i > 0:
                layers.append(MaxPool())
            for width in stage:
                layers += conv_bn_relu(c_in, width, model_config.p4, lift)
                c_in, lift = width, False
        # Flatten the last 3×3 (4×4 for 32×32 input) map rather than average it away: where strokes are matters for digits.
        features = c_in * (4 if model_config.p4 else 1) * (h >> len(model_config.stages)) * (w >> len(model_config.stages))
        layers += [MaxPool(), nn.Flatten()]
        if model_config.hidden:
            layers += [nn.Linear(features, model_config.hidden, bias=False), nn.BatchNorm1d(model_config.hidden), nn.ReLU(inplace=True)]
            features = model_config.hidden
        super().__init__(*layers, nn.Dropout(model_config.dropout), nn.Linear(features, model_config.num_classes))
        # Batch norm makes each convolution blind to its weights' scale, and Adam moves every weight by about lr per
        # step, so small starting weights turn even --lr=1e-4 into real progress (measured: 98.2 -> 99 % test accuracy).
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, P4Conv)):
                    m.weight.mul_(model_config.init_scale)


def batch_normed(model: CNN) -> list[nn.Module]:
    """The layers a batch norm follows: blind to the scale of their weights."""
    return [layer for layer, norm in itertools.pairwise(model) if isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d))]


@torch.no_grad()
def fold_batch_norm(model: CNN) -> nn.Sequential:
    """A copy of the evaluated CNN for prediction alone, each batch norm folded into its convolution's weights and a bias
    (a P4Conv becomes the plain convolution it computes): one layer fewer, 15 % of an fp32 forward pass here."""
    layers = list(model.eval())
    for i, (conv, norm) in enumerate(itertools.pairwise(layers)):
        if isinstance(conv, (nn.Conv2d, P4Conv)) and isinstance(norm, nn.BatchNorm2d):
            weight = conv.weight if isinstance(conv, nn.Conv2d) else conv.weight.reshape(-1)[conv.index]
            bias = conv.bias if getattr(conv, "bias", None) is not None else torch.zeros_like(norm.running_mean)
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            with torch.random.fork_rng(devices=[]):  # its initial weights must not move the run's random stream (dropout)
                layers[i] = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:], padding=1).to(weight.device)
            layers[i].weight.copy_(weight * scale.view(-1, 1, 1, 1))
            layers[i].bias.copy_((bias - norm.running_mean) * scale + norm.bias)
            layers[i + 1] = nn.Identity()
    return nn.Sequential(*layers).eval()


# ----------------------------------------------------------------------------- training: the state of a run, one epoch of steps, fit


class TrainingState:
    """All that changes while training, saved in last.pt as its training state: the weights and their moving average, the
    optimizer and gradient scaler, the random streams, the counters, the fraction done, the best epoch, the history."""

    def __init__(self, config: TrainConfig, model_config: ModelConfig, device: torch.device, ranks: Ranks, user: UserModel | None = None):
        self.device, self.seed, self.use = device, config.seed, DeviceUse.of(device)
        self.model = build_model(model_config, user)
        # a user's model gets the layout the course's code gives it: a .view(N, -1) in it fails on channels-last tensors
        channels_last = self.use.channels_last and isinstance(self.model, CNN)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # Batch norm makes the CNN's layers before it blind to their weights' scale, so a step turns them by lr / |w|: at
        # --lr=1e-4 they turned 30× slower than the recipe was measured with, and lost 0.2-0.45 points. Weights started
        # in proportion to --lr and decayed by recipe/--lr per step train alike at any --lr: 1e-4 reached 98.90 / 98.94 %
        # on untuned builds (seeds 1, 2; 98.62 % before), the default --lr is untouched (docs/research.md, 2026-12-02)
        relative = config.lr / DATASETS[config.dataset].lr
        with torch.no_grad():
            for layer in batch_normed(self.model) if isinstance(self.model, CNN) else []:
                layer.weight.mul_(relative)
        self.model = self.model.to(device, memory_format=self.memory_format)
        ids = [device.index] if device.type == "cuda" else None  # DDP's: this rank's GPU, or none on CPUs
        self.ddp = self.model if ranks.world == 1 else nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        # compiled for the one shape of a full batch: the merged last batch runs eager (a second, dynamic-shape compile was
        # what kept `--compile` from finishing on an H200 within 150 s, #35)
        self.full_batch = len(range(ranks.rank, config.batch_size, ranks.world))
        self.net = torch.compile(self.ddp, dynamic=False) if config.compile else self.ddp
        fused = {"fused": True} if self.use.fused_adamw else {}
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay / relative, **fused)
        self.generator = torch.Generator(device=device if self.use.random_on_device else "cpu").manual_seed(config.seed)
        self.amp = autocast_dtype(device, config.precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == torch.float16)
        self.averaged = copy.deepcopy(self.model) if config.ema else None
        self.ema_pairs = ema_tensors(self.averaged, self.model) if self.averaged is not None else None
        self.epoch = self.step = self.best_epoch = 0
        self.best_acc, self.done = -1.0, 0.0
        self.history = {"format_version": FORMAT_VERSION, "config": plain(dataclasses.asdict(config)), "steps": [], "epochs": []}

    @property
    def final(self) -> nn.Module:
        """The weights that are validated and saved: the moving average where there is one."""
        return self.model if self.averaged is None else self.averaged

    def state_dict(self) -> dict:
        """Everything needed to continue exactly (the averaged weights travel as the checkpoint's state_dict)."""
        counters = {name: getattr(self, name) for name in ("epoch", "step", "done", "best_acc", "best_epoch", "history")}
        states = {name: getattr(self, name).state_dict() for name in ("model", "optimizer", "scaler")}
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        randoms = {"generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(), "cuda_rng": cuda_rng}
        return counters | states | randoms | {"generator_device": self.generator.device.type, "device": self.device.type}

    def continue_from(self, last: Checkpoint, ranks: Ranks) -> None:
        """Go on from a last.pt: its weights, optimizer, random streams, counters and history (a note if it moves)."""
        self.load_state_dict(last.training_state, last.state_dict)
        if ranks.main:
            _say_what_moved(last, self.device, ranks)

    def load_state_dict(self, training: dict, averaged: dict) -> None:
        """Continue from state_dict()'s output (a last.pt's training state) and the averaged weights saved beside it."""
        load_weights(self.model, training["model"], "its last.pt")
        load_optimizer(self.optimizer, training["optimizer"])
        if training["scaler"]:  # a disabled scaler saves {}; an fp16 run resumed from a bf16/fp32 one starts its scale afresh
            self.scaler.load_state_dict(training["scaler"])
        if self.averaged is not None:
            self.averaged.load_state_dict(averaged)
        if training["generator_device"] == self.generator.device.type:
            self.generator.set_state(training["generator"])
        else:  # CPU and CUDA generators keep different states: the resumed run goes on from a seed of its own
            self.generator.manual_seed(self.seed * 1000 + training["epoch"])
        torch.set_rng_state(training["torch_rng"])
        if self.device.type == "cuda" and training["cuda_rng"] is not None:
            torch.cuda.set_rng_state(training["cuda_rng"], self.device)
        self.history, self.step, self.epoch, self.done = training["history"], training["step"], training["epoch"], training["done"]
        self.best_acc, self.best_epoch = training["best_acc"], training["best_epoch"]

    def seconds_so_far(self) -> float:
        """Training seconds of the epochs already done (a resumed run counts on from there)."""
        return self.history["epochs"][-1]["seconds"] if self.history["epochs"] else 0.0

    def record(self, losses: Tensor, lrs: list[float], val_acc: float, seconds: float, n_val: int) -> bool:
        """Log a finished epoch (its losses fetched: the epoch's one wait for the device); whether it is the best so far."""
        losses = losses.tolist()
        if not all(map(math.isfinite, losses)):
            raise LossNotFinite(f"the training loss became NaN/infinite in epoch {self.epoch + 1}; try a smaller --lr")
        self.epoch += 1
        self.history["steps"] += [{"step": self.step + i, "loss": v, "lr": lr} for i, (v, lr) in enumerate(zip(losses, lrs), 1)]
        self.step += len(losses)
        train_loss = sum(losses) / len(losses)
        self.history["epochs"].append(
            {"epoch": self.epoch, "step": self.step, "train_loss": train_loss, "val_accuracy": val_acc, "seconds": seconds}
            | {"device": self.device.type, "precision": precision_name(self.amp)}
        )
        improved = val_acc >= self.best_acc - tie_margin(self.best_acc, n_val)
        if improved:
            self.best_acc, self.best_epoch = max(self.best_acc, val_acc), self.epoch
            self.history["best"] = {"epoch": self.epoch, "val_accuracy": val_acc}  # what best.pt holds
        return improved


def schedule_at(config: TrainConfig, done: float) -> tuple[float, float | None]:
    """The learning rate and Adam's beta1 (None: as it is) at this fraction of the run done: a run of any length, of a
    --budget's seconds, or moved to other steps an epoch follows it alike, with nothing to re-plan."""
    p = min(max(done, 0.0), 1.0)
    if config.scheduler == "onecycle":  # OneCycleLR's shape: from lr/25 up a half cosine, then down to lr/25e4; beta1 against it
        w = config.warmup_fraction
        rise = (1 - math.cos(math.pi * p / w)) / 2 if p < w else (1 + math.cos(math.pi * (p - w) / (1 - w))) / 2
        floor = 1 / 25 if p < w else 1 / 25e4
        return config.lr * (floor + (1 - floor) * rise), 0.95 - 0.1 * rise
    if config.scheduler == "cosine":
        return config.lr * (1 + math.cos(math.pi * p)) / 2, None
    if config.scheduler == "step":  # a tenth every third of the run
        return config.lr * 0.1 ** min(int(3 * p), 2), None
    return config.lr, None


def fraction_done(config: TrainConfig, epochs_done: float, seconds: float) -> float:
    """The fraction of the run done: epochs of --epochs; for --budget the larger of seconds of its fraction and epochs of its cap."""
    if config.budget is None:
        return epochs_done / config.epochs
    return max(epochs_done / (config.budget_cap * DATASETS[config.dataset].epochs), seconds / (config.budget_fraction * config.budget))


def ema_tensors(averaged: nn.Module, model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    """The floating-point weights and batch-norm statistics of both models, paired once (they alias the live tensors)."""
    pairs = [(a, m) for a, m in zip(averaged.state_dict().values(), model.state_dict().values()) if a.is_floating_point()]
    return [a for a, _ in pairs], [m for _, m in pairs]


@torch.no_grad()
def update_ema(tensors: tuple[list[Tensor], list[Tensor]], decay: float) -> None:
    """Move the averaged weights and batch-norm statistics towards the model's: they generalise better than the last step's."""
    torch._foreach_lerp_(*tensors, 1 - decay)


def train_epoch(
    state: TrainingState,
    config: TrainConfig,
    x_train: Tensor,
    y_train: Tensor,
    ranks: Ranks,
    before_step: Callable[[int], float],
    turns=None,
) -> tuple[Tensor, list[float]]:
    """One pass over the data in global batches (each rank every world-th image), warped a block at a time, each step at
    the learning rate of the fraction done (`before_step(i)`; a --budget run stops at 1); its losses and learning rates."""
    state.net.train()
    order = torch.randperm(len(x_train), generator=state.generator, device=state.generator.device)
    losses, lrs = [], []
    starts = batch_starts(len(order), config.batch_size, ranks.world)
    spans = list(zip(starts, [*starts[1:], len(order)]))
    show = {} if ranks.main else {"disable": True}
    for i in tqdm(range(len(spans)), desc=epoch_name(state.epoch + 1, config), leave=False, **show):
        done = before_step(i)
        if done >= 1 and i:  # a --budget spent (fit decided at the last epoch's end that this one starts, and records it)
            break
        if i % config.augment_block == 0:  # one warp for a block of steps: ~100 small operations each, once (#35)
            block = training_batches(state, config, (x_train, y_train, turns), order, spans[i : i + config.augment_block], ranks)
        lr, beta1 = schedule_at(config, done)
        losses.append(train_step(state, config, *block[i % config.augment_block], lr, beta1))
        if state.ema_pairs is not None:
            n = state.step + len(losses) - 1
            update_ema(state.ema_pairs, min(config.ema, (1 + n) / (config.ema_warmup + n)))
        lrs.append(lr)
    return all_sum(torch.stack(losses).float(), ranks) / ranks.world, lrs  # on the device: no step waits for the host


def training_batches(state: TrainingState, config: TrainConfig, train: tuple, order: Tensor, spans: list, ranks: Ranks) -> list[tuple]:
    """This rank's share of each global batch order[start:end], warped by the dataset's augmentation in one go, on the device."""
    (x_train, y_train, turns), first, last, gen = train, spans[0][0], spans[-1][1], state.generator
    places = slice(None)  # in the global block: all of it for one process, else this rank's share of each batch
    if ranks.world > 1:
        places = torch.cat([torch.arange(start, end)[ranks.rank :: ranks.world] for start, end in spans]).to(gen.device) - first
    mine = order[first:last][places].to(x_train.device)  # order lives with the generator
    x = x_train[mine]
    if config.augmentation:  # random numbers for the whole global block: every rank's generator stays in step
        rand = (torch.rand(last - first, 10, generator=gen, device=gen.device) * 2 - 1)[places]  # all 10 an augmentation may use
        x = augment_batch(x, rand.to(x_train.device), config.augmentation, None if turns is None else turns[mine])
    x = x.to(state.device, non_blocking=state.use.non_blocking).contiguous(memory_format=state.memory_format)
    y = y_train[mine].to(state.device, non_blocking=state.use.non_blocking)
    sizes = [len(range(start + ranks.rank, end, ranks.world)) for start, end in spans]
    return list(zip(x.split(sizes), y.split(sizes)))


def train_step(state: TrainingState, config: TrainConfig, x: Tensor, y: Tensor, lr: float, beta1: float | None = None) -> Tensor:
    """One step of AdamW at this learning rate (and beta1, where given): the course's three calls, through the fp16 scaler."""
    for group in state.optimizer.param_groups:
        group["lr"], group["betas"] = lr, (group["betas"][0] if beta1 is None else beta1, group["betas"][1])
    net = state.net if len(x) == state.full_batch else state.ddp  # compiled (where asked) for full batches only
    with autocast(state.device, state.amp):
        loss = F.cross_entropy(net(x).float(), y, label_smoothing=config.label_smoothing)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    return loss.detach()


def epoch_name(epoch: int, config: TrainConfig, of: str = "/") -> str:
    """'epoch 3/10' (or with of=" of ", 'epoch 3 of 10'), or for a --budget run 'epoch 3' (its epochs are what fits)."""
    return f"epoch {epoch}" + (f"{of}{config.epochs}" if config.epochs else "")


def fit(
    data: Data, run_dir: Path, config: TrainConfig, device: torch.device, last: Checkpoint | None, ranks: Ranks, user: UserModel | None
) -> dict:
    """Train from scratch or from last.pt's state: for each epoch train, recalibrate batch norm, validate, record, save."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    model_config = model_of(config, user) if last is None else last.model_config  # a run keeps its model
    (x_train, y_train, turns), (x_val, y_val), model_config = split_for_training(data, config, device, model_config)
    state = TrainingState(config, model_config, device, ranks, user)
    if last is not None:
        state.continue_from(last, ranks)
    run = RunFolder(run_dir, state, Checkpoint(model_config, {}, list(data.classes), config, data_fingerprints(data), {}), last, ranks)
    steps_per_epoch = len(batch_starts(len(x_train), config.batch_size, ranks.world))
    clock = TrainingClock(config, device, ranks, steps_per_epoch, started, state.seconds_so_far())

    def before_step(steps_into_epoch: int) -> float:  # the fraction of the run done; the clock starts after the first
        return clock.step_begins(state.epoch + steps_into_epoch / steps_per_epoch)

    with run.stopping_in_one_line():  # Ctrl-C, a refused budget, a failed write, a loss gone NaN: what last.pt holds
        while state.done < 1 and not stopped_early(state.epoch, state.best_epoch, config.patience):
            losses, lrs = train_epoch(state, config, x_train, y_train, ranks, before_step, turns)
            clock.epoch_trained()
            recalibrate_batch_norm(state.final, x_train[: config.batch_norm_images], device, state.memory_format, state.amp)
            val_acc = validate(state.final, x_val, y_val, device, ranks, state.amp)
            improved = state.record(losses, lrs, val_acc, round(clock.seconds(), 2), len(y_val))
            state.done = max(state.done, clock.done(state.epoch))  # whether another epoch starts, saved with this one
            run.save_epoch(improved)
            clock.epoch_saved()
    run.finish()
    return state.history


def model_of(config: TrainConfig, user: UserModel | None) -> ModelConfig:
    """A new run's model config: the dataset's CNN, or the user's model class with its arguments and its file's SHA-256."""
    cnn = DATASETS[config.dataset].model_config
    if user is None:
        return cnn
    return dataclasses.replace(cnn, user_model=user.spec, user_args=config.model_args or {}, user_sha256=user.sha256)


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, images: Tensor, device: torch.device, memory_format, amp: torch.dtype | None) -> None:
    """Measure the batch-norm statistics of these weights afresh on unaugmented training images: the running averages lag
    fast-moving weights, so a short run (the sample with --batch_size=1024: 16 steps) scored chance with them, 89 % so."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    model.train()
    with autocast(device, amp):
        for start in range(0, len(images), 512):
            model(images[start : start + 512].to(device).contiguous(memory_format=memory_format))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def validate(model: nn.Module, x_val: Tensor, y_val: Tensor, device: torch.device, ranks: Ranks, amp: torch.dtype | None = None) -> float:
    """Validation accuracy, each rank scoring its share of the images and the counts summed over ranks."""
    mine = slice(ranks.rank, None, ranks.world)
    correct = (predict_logits(model, x_val[mine], device, amp=amp).argmax(1) == y_val[mine].cpu()).sum()
    counts = all_sum(torch.tensor([float(correct), float(len(y_val[mine]))], device=device), ranks)
    return float(counts[0] / counts[1])


def tie_margin(accuracy: float, n_val: int) -> float:
    """One standard error of a validation accuracy: closer scores are a tie, which the later, longer-trained weights win
    (on 1,250 validation digits, the first epoch one or two images ahead kept weights 0.1-0.3 points worse on the test)."""
    p = min(max(accuracy, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / max(n_val, 1))


def stopped_early(epoch: int, best_epoch: int, patience: int) -> bool:
    """Whether --patience epochs have passed without a better validation accuracy (never with patience 0)."""
    return bool(patience) and epoch - best_epoch >= patience


# ----------------------------------------------------------------------------- evaluation: test accuracy, per class, the confusion matrix


def evaluate(
    checkpoint: str,
    dataset: str | None = None,
    data_dir: str | None = None,
    batch_size: int = 1000,
    device: str = "auto",
    plot: str | None = None,
    tta: bool = True,
    precision: str = "auto",
    model: str | None = None,
) -> None:
    """Test accuracy of a checkpoint: prints `Test accuracy: 99.12% (9912/10000)`, per-class accuracy to stderr, a confusion PNG.

    Where the checkpoint's model config names test-time turns (corrupted MNIST: -10, 0, 10 degrees) the predictions
    for the turned copies are averaged; --tta=False scores the single, unturned view.

    Args:
        checkpoint: best.pt (or last.pt) written by `train`
        dataset: the data to score on (default: the checkpoint's dataset)
        data_dir: folder holding that data (default: found as in `train`)
        batch_size: images per forward pass
        device: auto, cpu, cuda or mps
        plot: where to write the confusion-matrix PNG (default: beside the checkpoint); <checkpoint>_test.json, the result
            that `compare` shows, goes beside it
        tta: average the checkpoint's test-time turns (False: one view)
        precision: auto (bf16 or fp16 where the hardware computes in it, as in training) or fp32
        model: your model file, PATH.py:Class, where the checkpoint holds one (imported only when named here)
    """
    _check_int("batch_size", batch_size, 1)
    _check_bool("tta", tta)
    torch_device = pick_device(_check_choice("device", device, DEVICES))
    ckpt = Checkpoint.load(checkpoint)
    dataset = ckpt.train_config.dataset if dataset is None else dataset
    _check_dataset(dataset)
    net = ckpt.model(model).to(torch_device)
    plot_path = Path(str(checkpoint)).with_name(Path(str(checkpoint)).stem + "_confusion.png") if plot is None else Path(str(plot))
    check_writable(plot_path.parent)  # before any data is read
    data = load_data(dataset, data_dir, train=False)  # the training split is never used here: not even read
    test_fingerprint = fingerprint(data.test_images, data.test_labels)
    _check_test_data(ckpt, dataset, data, test_fingerprint)
    degrees, confidence = list(ckpt.model_config.test_turns) if tta else [], ckpt.model_config.test_turns_below
    _say_test_turns(degrees, confidence)
    amp = autocast_dtype(torch_device, _check_choice("precision", precision, ("auto", "fp32")))
    predictions = predict_probs(net, data.test_images, torch_device, batch_size, degrees, amp, confidence).argmax(1)
    correct, total = int((predictions == data.test_labels).sum()), len(data.test_labels)
    classes = ckpt.classes
    confusion = torch.bincount(data.test_labels * len(classes) + predictions, minlength=len(classes) ** 2).view(len(classes), -1)
    for i, (name, row) in enumerate(zip(classes, confusion)):
        say(f"  {name:>12}: {100 * row[i] / max(int(row.sum()), 1):6.2f}% of {int(row.sum())}")
    print(f"Test accuracy: {100 * correct / max(total, 1):.2f}% ({correct}/{total}){_sample_caution(ckpt, data)}")
    plot_confusion(confusion, classes, f"{dataset} test: {100 * correct / max(total, 1):.2f}% correct", plot_path)
    result = {"accuracy": correct / max(total, 1), "correct": correct, "total": total, "epoch": ckpt.metrics.get("epoch")}
    result |= {"dataset": dataset, "data": data.source, "test": test_fingerprint, "tta": degrees}
    write_atomic(json.dumps(result, indent=1).encode(), plot_path.with_name(f"{Path(str(checkpoint)).stem}_test.json"))
    say(f"confusion matrix: {plot_path}")


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: Tensor, device: torch.device, batch_size: int = 1000, amp: torch.dtype | None = None
) -> Tensor:
    """Logits for a whole split on the CPU, in batches, under autocast to `amp` (the CNN folded, channels-last where safe)."""
    layout = torch.channels_last if DeviceUse.of(device).channels_last and isinstance(model, CNN) else torch.contiguous_format
    model = fold_batch_norm(model).to(memory_format=layout) if isinstance(model, CNN) else model.eval()
    with autocast(device, amp):
        batches = (images[i : i + batch_size].to(device).contiguous(memory_format=layout) for i in range(0, len(images), batch_size))
        return torch.cat([model(x).float().cpu() for x in batches])


def predict_probs(
    model: nn.Module,
    images: Tensor,
    device: torch.device,
    batch_size: int = 1000,
    degrees: list | None = None,
    amp=None,
    confidence: float = 1.0,
) -> Tensor:
    """Class probabilities for a whole split; with degrees, averaged over turned copies for the images less sure than `confidence`."""
    single = predict_logits(model, images, device, batch_size, amp).softmax(1)
    angles = [float(a) for a in degrees or [0.0]]
    unsure = (single.max(1).values < confidence).nonzero().flatten()
    if angles == [0.0] or not len(unsure):
        return single
    turned = (affine_warp(images[unsure], torch.full((len(unsure),), a)) for a in angles)
    views = (
        single[unsure] if a == 0 else predict_logits(model, view, device, batch_size, amp).softmax(1) for a, view in zip(angles, turned)
    )
    probs = single.clone()
    probs[unsure] = sum(views) / len(angles)
    return probs


# ----------------------------------------------------------------------------- commands: train (and its flags from TrainConfig), the entry point


@takes_train_flags()
def train(resume: str | bool | None = None, if_unfinished: bool = False, **flags) -> None:
    """Train the CNN (or your --model) on --dataset; writes best.pt, last.pt, history.json and training_curve.png into --out.

    The run folder (--out, or checkpoints/<name from the flags given>) continues an unfinished run where its last.pt
    stopped (after a crash, a kill or a Colab disconnect: run the same command again); a finished one is refused (exit
    status 3; with --if_unfinished, said calmly, exit 0). --resume=RUN (or RUN/last.pt) continues a run with its saved
    settings whatever else the command says; only --device and --precision may change. Under `torchrun
    --nproc_per_node=N` it trains data-parallel (DDP) and only rank 0 writes files.

    Args:
        resume: RUN/last.pt (or RUN) to continue an unfinished run
        if_unfinished: where the run folder holds a finished run, say where its results are and exit 0"""
    _stop_cleanly_on_sigterm()
    config = TrainConfig(**flags).resolved()  # the run's settings (a continued run's are its own: open_run)
    try:
        run_dir, config, last = open_run(config, flags, resume)
    except RunFinished as finished:
        if not _check_bool("if_unfinished", if_unfinished):
            raise
        print(finished.results)
        return None
    check_before_reading(config, run_dir)
    user = named_model(flags.get("model"), last)  # your model's file, imported because it is named here
    recipe_lr = DATASETS[config.dataset].lr
    if last is None and not recipe_lr / 10 <= config.lr <= recipe_lr * 10 and Ranks.launched().main:
        far = f"{recipe_lr / config.lr:.0f}× below" if config.lr < recipe_lr else f"{config.lr / recipe_lr:.0f}× above"
        say(
            f"note: --lr={config.lr:g} is {far} the {recipe_lr:g} this recipe was measured with; the CNN's batch-normed layers' "
            "starting weights and decay follow it, but expect a little less accuracy in the same epochs (README, Results)"
        )
    data = load_data(config.dataset, config.data_dir)
    if user is not None:
        check_model(user, config.model_args or {}, data.train_images[:2], len(data.classes))
        if config.augmentation and last is None and Ranks.launched().main:  # measured: README, Your model
            say(
                "note: the dataset's augmentation was tuned for the built-in CNN; the course's small model scored higher without it (--augment=False)"
            )
    if last is not None:
        if fingerprint(data.train_images, data.train_labels) != last.data_fingerprint["train"]:
            raise UserError(
                f"{config.data_dir}: the training data changed since {run_dir} was saved; going on would not continue the same run"
            )
        verb = "continuing the unfinished run in" if resume in (None, False) else "resuming"
        return _run_fit(
            data, run_dir, config, last, user, f"{verb} {run_dir} after {epoch_name(last.training_state['epoch'], config, ' of ')}"
        )
    if len(data.train_images) < 2:
        raise UserError(f"{data.source}: only {len(data.train_images)} training image(s); need at least 2 to carve a validation split")
    config = dataclasses.replace(config, data_dir=data.source)
    _run_fit(data, run_dir, config, None, user, f"training on {len(data.train_images)} {config.dataset} images from {data.source}")


def _run_fit(data: Data, run_dir: Path, config: TrainConfig, last: Checkpoint | None, user: UserModel | None, what: str) -> None:
    """Start (or join) the torchrun job, fit, report the best checkpoint, leave the job."""
    ranks, device = start_distributed(config.device)
    try:
        if ranks.main:
            job = f" on {ranks.world} processes (DDP)" if ranks.world > 1 else ""
            say(f"{what} on {device}{job}; writing to {run_dir}")
        history = fit(data, run_dir, dataclasses.replace(config, world=ranks.world), device, last, ranks, user)
        if ranks.main:
            best = history["best"]
            print(f"best checkpoint: {run_dir / 'best.pt'} (epoch {best['epoch']}, validation accuracy {100 * best['val_accuracy']:.2f}%)")
        if ranks.world > 1:
            torch.distributed.barrier()  # no rank tears gloo down while rank 0 still writes
    finally:
        if ranks.world > 1 and torch.distributed.is_initialized():
            gc.collect()  # DDP's reducer must go before its process group, or gloo aborts the process at exit
            torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line on stderr and a non-zero exit status."""
    import fire

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("FASHION_TRAINER_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    try:
        check_flags(argv)
        fire.Fire(COMMANDS, command=argv, name="fashion_trainer.py")
    except UserError as exc:
        if debug:
            raise
        again = f"; run: python fashion_trainer.py {shlex.join(argv)} --model={exc.spec}" if isinstance(exc, ModelNotNamed) else ""
        say(f"error: {exc}{again}")
        return exc.exit_code
    except KeyboardInterrupt:
        say("error: interrupted")
        return 130
    except Exception as exc:  # a bug or a fault nobody foresaw: still one line, the traceback on request
        if debug:
            raise
        say(f"error: unexpected {type(exc).__name__}: {first_line(exc)} (run again with --debug for the traceback)")
        return 1
    return 0


# ============================================================================= APPENDIX
# What a reader can skip to follow a run: the machinery that keeps runs alive and the other commands.


# ----------------------------------------------------------------------------- run folders and checkpoints: what a run folder holds, whether a run continues


def fingerprint(images: Tensor, labels: Tensor) -> str:
    """A short SHA-256 of a split's pixels (quantised to 8 bits) and labels, for provenance checks."""
    digest = hashlib.sha256()
    digest.update(images.mul(255).round().to(torch.uint8).numpy().tobytes())
    digest.update(labels.numpy().astype("<i8").tobytes())
    return digest.hexdigest()[:16]


def data_fingerprints(data: Data) -> dict:
    """Fingerprints of both splits and where they came from, stored in every checkpoint."""
    splits = {"train": (data.train_images, data.train_labels), "test": (data.test_images, data.test_labels)}
    return {name: fingerprint(*split) for name, split in splits.items()} | {"source": data.source}


@dataclass
class Checkpoint:
    """best.pt and last.pt, whose keys no other code names: the model config and its validated weights (the moving
    average), classes, settings, data fingerprints, metrics; last.pt also the training state that continues the run."""

    model_config: ModelConfig
    state_dict: dict[str, Tensor]
    classes: list[str]
    train_config: TrainConfig
    data_fingerprint: dict  # see data_fingerprints
    metrics: dict  # epoch, val_accuracy, best_val_accuracy, best_epoch, seconds
    training_state: dict | None = None  # last.pt only: TrainingState.state_dict()
    path: Path | None = field(default=None, compare=False)  # where it was read from, for messages (not saved)

    def save(self, path: Path, previous: Path | None = None) -> None:
        """Write it whole or not at all, as tensors and plain values that torch.load(weights_only=True) reads back."""
        saved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare and getattr(self, f.name) is not None}
        saved |= {name: plain(dataclasses.asdict(getattr(self, name))) for name in ("model_config", "train_config")}
        saved |= {"state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict.items()}, "classes": list(self.classes)}
        save_torch(
            {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "torch_version": str(torch.__version__)} | saved, path, previous
        )

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Read a checkpoint safely (weights_only: tensors and plain values, never code) and check its format."""
        path = Path(str(path)).expanduser()
        if not path.is_file():
            raise UserError(f"checkpoint {path} does not exist; train one with: python fashion_trainer.py train")
        raw = restricted_load(
            lambda: torch.load(path, map_location="cpu", weights_only=True), path, "tensors and plain values", "checkpoint"
        )
        if isinstance(raw, dict) and raw and all(isinstance(v, Tensor) for v in raw.values()):
            keys = ", ".join(list(raw)[:3])
            raise UserError(
                f"{path}: a bare state_dict ({keys}, …) without the architecture; evaluate needs a checkpoint written by `train` (best.pt)"
            )
        if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
            raise UserError(f"{path}: not a {FORMAT_NAME} checkpoint (expected best.pt or last.pt written by `train`)")
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise UserError(f"{path}: {_other_version(version)}")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in raw and f.default is dataclasses.MISSING]
        if missing:
            raise UserError(f"{path}: {FORMAT_NAME} checkpoint is missing {missing}; it is damaged")
        try:
            model_config = ModelConfig(**{name: tuples(value) for name, value in raw["model_config"].items()})
            saved = {f.name: raw.get(f.name) for f in dataclasses.fields(cls) if f.compare}
            return cls(**saved | {"model_config": model_config, "train_config": TrainConfig.from_dict(raw["train_config"])}, path=path)
        except (TypeError, AttributeError, ValueError) as exc:
            raise UserError(f"{path}: {FORMAT_NAME} checkpoint with malformed contents ({first_line(exc)}); it is damaged") from exc

    def model(self, model_file: str | None = None) -> nn.Module:
        """The model rebuilt from the checkpoint, in eval mode (a user's from the file the command names with --model)."""
        user = named_model(model_file, self)
        try:
            model = build_model(self.model_config, user)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{self.path}: its model config is malformed ({first_line(exc)}); the file is damaged") from exc
        load_weights(model, self.state_dict, self.path)
        return model.eval()


def load_weights(model: nn.Module, weights: dict, where: object) -> None:
    """Load saved weights into a model; weights that do not fit it are one line."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        why = "the file is damaged" if isinstance(model, CNN) else "is it the class and --model_args it was trained with?"
        raise UserError(f"{where}: its weights do not fit the model ({first_line(exc)}); {why}") from exc


def _other_version(version: object) -> str:
    """Why a file of another format version is refused: no file is translated between development versions."""
    if isinstance(version, int) and version > FORMAT_VERSION:
        return f"made by a newer fashion_trainer (format {version}, this one reads {FORMAT_VERSION}); update fashion_trainer.py"
    return f"made by an earlier development version of fashion_trainer (format {version}); retrain: this version does not read it"


def load_optimizer(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load a saved optimizer state but keep this device's way of stepping (a CPU run's unfused AdamW on a T4 with a
    gradient scaler fails its first step), with every state tensor where its parameter is and in its memory layout."""
    # how AdamW steps on this device: torch's load_state_dict would copy these from the checkpoint, made elsewhere
    policy = [{k: g[k] for k in ("fused", "foreach", "capturable", "differentiable") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, own in zip(optimizer.param_groups, policy):
        group.update(own)
        on_device = bool(group.get("fused") or group.get("capturable"))  # their step counters live beside the weights
        for param in group["params"]:
            values = optimizer.state.get(param, {})
            for key, value in values.items():
                if key == "step":
                    values[key] = value.to(param.device if on_device else "cpu", torch.float32)
                elif isinstance(value, Tensor) and value.shape == param.shape:
                    values[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def run_name(flags: dict | list[str]) -> str:
    """A run folder's name under checkpoints/ from the `train` flags given (a dict, or the notebook's "--name=value" list):
    the dataset, then each flag and value but where it runs, a path as a short hash, a long name ending in one."""
    from fire.parser import DefaultParseValue

    pairs = flags.items() if isinstance(flags, dict) else [f.lstrip("-").partition("=")[::2] for f in flags]
    given = {name: DefaultParseValue(value) if isinstance(value, str) else value for name, value in pairs}
    words = [str(given.get("dataset", TrainConfig.dataset))]
    for name, value in given.items():
        if name in ("dataset", "out", *WHERE_IT_RUNS):
            continue
        value = str(value)
        if "/" in value or "\\" in value:
            value = hashlib.sha1(str(Path(value).expanduser().resolve()).encode()).hexdigest()[:6]
        words.append(re.sub(r"[^A-Za-z0-9._+-]", "", name + value))
    name = "-".join(w for w in words if w)
    return name if len(name) <= 64 else f"{name[:48]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


# What a continued run may change: where and how this machine runs it (the command's value wins) and where its files are;
# every other setting is the run's own (open_run).
WHERE_IT_RUNS = ("device", "precision")
WHERE_FILES_ARE = ("data_dir", "out")


def open_run(config: TrainConfig, flags: dict, resume: str | bool | None = None) -> tuple[Path, TrainConfig, Checkpoint | None]:
    """New run or continued, decided here alone for `train`, `--resume`, torchrun and the notebook: (folder, settings,
    None) for a new run; (folder, its saved settings with this command's device and precision, its last.pt) for an
    unfinished one; RunFinished for a finished one; UsageError where a flag given differs or the folder holds else."""
    if resume not in (None, False):
        run_dir, last = _resumed_run(resume, flags)
    else:
        run_dir = Path(str(config.out or Path("checkpoints") / run_name(flags))).expanduser()
        last = _saved_run(run_dir, config, flags)
        if last is None:
            return run_dir, dataclasses.replace(config, out=str(run_dir)), None
    if run_finished(last):
        training, saved = last.training_state, last.train_config
        done = (
            f"{run_dir} holds a finished run ({epoch_name(training['epoch'], saved, ' of ')}, best.pt from epoch "
            f"{training['best_epoch']}, validation accuracy {100 * last.metrics['best_val_accuracy']:.2f}%)"
        )
        finished = RunFinished(
            f"{done}; evaluate it with: python fashion_trainer.py evaluate {run_dir / 'best.pt'}, or change a setting or choose a "
            "new --out to train another"
        )
        finished.results = f"{done}: nothing was trained, these are its results; change a setting (or the run folder) to train another"
        raise finished
    return run_dir, _on_this_machine(last.train_config, flags), last


def _saved_run(path: Path, config: TrainConfig, given: dict) -> Checkpoint | None:
    """The last.pt in --out, its settings checked against the flags given; None for a new, empty or restarted folder."""
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return None
    last = load_last(path) if path.is_dir() else None
    if last is None:
        return _restart_first_epoch(path, config, given)
    _refuse_other_settings(path, config, last.train_config, given)
    return last


def run_finished(last: Checkpoint) -> bool:
    """Whether a last.pt holds a finished run: its whole schedule done, or stopped early by --patience."""
    training = last.training_state
    return training["done"] >= 1 or stopped_early(training["epoch"], training["best_epoch"], last.train_config.patience)


def _refuse_other_settings(path: Path, config: TrainConfig, saved: TrainConfig, given: dict) -> None:
    """Refuse a run in `path` where a flag given differs from its own; note the defaults that differ, which it keeps."""
    free = {"world", *WHERE_IT_RUNS, *WHERE_FILES_ARE, *(("epochs",) if saved.budget else ())}
    moved = [f.name for f in dataclasses.fields(config) if f.name not in free and getattr(config, f.name) != getattr(saved, f.name)]
    for name in [n for n in moved if n in given][:1]:
        raise UsageError(
            f"--out {path} holds a run with --{name}={getattr(saved, name)}, this command says {getattr(config, name)}; "
            f"run its own command again to continue it, or choose a new --out for a new run"
        )
    if moved and Ranks.launched().main:
        flags = {f.name for f in dataclasses.fields(config) if "help" in f.metadata}
        said = ", ".join(f"--{n}={getattr(saved, n)} (default now {getattr(config, n)})" if n in flags else n for n in moved)
        say(f"note: the run in {path} keeps its own settings where this command leaves the code's defaults: {said}")


def _restart_first_epoch(path: Path, config: TrainConfig, given: dict) -> None:
    """A folder killed before its first epoch was saved whole (run files only) is started again; any other content is refused."""
    names = [p.name for p in path.iterdir()] if path.is_dir() else None
    if names is None or not all(n in RUN_FILES or n.endswith(".tmp") for n in names):
        raise UsageError(f"--out {path} already exists and holds no run to continue; choose a new folder so nothing is overwritten")
    if (path / "best.pt").exists():  # written whole or not at all: one that does not load is not a run's
        try:
            best = Checkpoint.load(path / "best.pt")
        except UserError:
            raise UsageError(
                f"--out {path} already exists and holds no run to continue (its best.pt is no checkpoint); choose a new folder "
                "so nothing is overwritten"
            ) from None
        _refuse_other_settings(path, config, best.train_config, given)
    say(f"note: {path} holds no finished epoch's training state (stopped in epoch 1); starting the run again")


# What a run folder holds besides its checkpoints: a folder of nothing else, without a training state, was killed before
# its first epoch was saved whole, and the same command starts it again.
RUN_FILES = ("best.pt", "history.json", "training_curve.png", "best_confusion.png", "best_test.json", "best_misclassified.png")


def load_last(run_dir: Path) -> Checkpoint | None:
    """A run's last.pt, or last.prev.pt (said) where last.pt is missing or damaged; None where the folder holds neither."""
    problems = []
    for name in ("last.pt", "last.prev.pt"):
        if not (run_dir / name).is_file():
            continue
        try:
            last = Checkpoint.load(run_dir / name)
            if last.training_state is None:
                raise UserError(f"{run_dir / name} holds no training state")
        except UserError as exc:
            problems.append(str(exc))
            continue
        if problems:
            say(f"note: {problems[0]}; going on from {name}, the state one epoch earlier")
        return last
    if problems:
        raise UserError(f"{problems[0]}; there is no earlier state (last.prev.pt) to go on from: train anew with another --out")
    return None


def _resumed_run(resume: str | bool, flags: dict) -> tuple[Path, Checkpoint]:
    """--resume: the run folder and the training state it names (RUN, RUN/last.pt, or with --out=RUN)."""
    if resume is True:
        if flags.get("out") is None:
            raise UsageError("--resume needs the run: --resume=RUN_FOLDER/last.pt, or --resume with --out=RUN_FOLDER")
        resume = flags["out"]
    other = sorted(set(flags) - {"out", "model", *WHERE_IT_RUNS})  # --model names the run's own file again
    if other:
        free = " and ".join(f"--{n}" for n in WHERE_IT_RUNS)
        raise UsageError(f"--{other[0]} cannot change when resuming: the run keeps its settings (only {free} may change)")
    path = Path(str(resume)).expanduser()
    run_dir = path if path.is_dir() else path.parent
    if path.is_dir() or path.name == "last.pt":
        last = load_last(run_dir)
        if last is None:
            raise UserError(f"{run_dir / 'last.pt'} does not exist; resume from a run folder that `train` wrote")
    else:
        last = Checkpoint.load(path)
        if last.training_state is None:
            raise UserError(f"{path} holds no training state (best.pt never does); resume from the run's last.pt")
    return run_dir, last


def _on_this_machine(config: TrainConfig, flags: dict) -> TrainConfig:
    """A saved run's settings with this command's --device and --precision; an unavailable saved one becomes auto, said."""
    checks = {f.name: f.metadata["check"] for f in dataclasses.fields(TrainConfig) if f.name in WHERE_IT_RUNS}
    config = dataclasses.replace(config, **{n: checks[n](n, flags[n]) for n in WHERE_IT_RUNS if n in flags})
    if "device" not in flags and not device_available(config.device):
        say(f"note: this run was started with --device={config.device}, which is not available here; going on with --device=auto")
        config = dataclasses.replace(config, device="auto")
    if "precision" not in flags and config.precision == "fp16" and pick_device(config.device).type == "cpu":
        say("note: this run was started with --precision=fp16, which needs a GPU; going on with --precision=auto")
        config = dataclasses.replace(config, precision="auto")
    return config


def check_before_reading(config: TrainConfig, run_dir: Path) -> None:
    """Refusals before any data is read: a batch under two images a torchrun process, --compile without a C compiler, a bad folder."""
    launched = Ranks.launched()
    world = launched.world
    if config.batch_size < 2 * world:
        raise UsageError(
            f"--batch_size={config.batch_size} is shared by {world} processes: each needs at least 2 images a step; use ≥ {2 * world}"
        )
    compilers = (os.environ.get("CXX"), os.environ.get("CC"), "c++", "g++", "clang++", "cc", "gcc", "clang", "cl")
    if config.compile and not any(name and shutil.which(name) for name in compilers):
        raise UsageError(
            "--compile builds its kernels with a C/C++ compiler and none is on the PATH here; install one (macOS: "
            "xcode-select --install; Linux: build-essential; Windows: Visual Studio's C++ tools) or leave --compile out"
        )
    if launched.main:
        check_writable(run_dir)


class RunFolder:
    """Where a run is written (by rank 0): made once as the run starts, never recreated (a dropped Drive mount leaves an
    empty folder); each epoch's checkpoints, history.json and curve; one line saying what last.pt holds if the run stops."""

    def __init__(self, path: Path, state: TrainingState, saving: Checkpoint, last: Checkpoint | None, ranks: Ranks):
        self.path, self.state, self.saving, self.main = path, state, saving, ranks.main
        self.saved, self.made, self.curve = state.epoch, not path.exists(), CurveRedraws()
        state.history["data"] = saving.data_fingerprint
        self.opened = open_folder(path) if self.main else None
        if self.main and last is not None:
            restore_best(last, path)

    def save_epoch(self, improved: bool) -> None:
        """last.pt (the one before kept as last.prev.pt), then best.pt if improved (never an epoch last.pt does not
        continue), history.json and the curve, into the folder opened or nowhere; a failed write says what last.pt holds."""
        state, epoch = self.state, self.state.history["epochs"][-1]
        if not self.main:
            return
        try:
            check_still_there(self.path, self.opened)
            metrics = {"epoch": state.epoch, "val_accuracy": epoch["val_accuracy"], "best_val_accuracy": state.best_acc}
            metrics |= {"best_epoch": state.best_epoch, "seconds": epoch["seconds"]}
            best = dataclasses.replace(self.saving, state_dict=state.final.state_dict(), metrics=metrics)
            dataclasses.replace(best, training_state=state.state_dict()).save(self.path / "last.pt", previous=self.path / "last.prev.pt")
            if improved:
                best.save(self.path / "best.pt")
            write_atomic(json.dumps(state.history, indent=1).encode(), self.path / "history.json")
            self.curve.draw(state.history, self.path / "training_curve.png", final=state.done >= 1)  # a running run can be looked at
        except WriteFailed as exc:
            kept = f"{self.path / 'last.pt'} still holds epoch {self.saved}" if self.saved else "no epoch is saved yet"
            raise WriteFailed(f"{exc} ({kept})") from exc
        self.saved = state.epoch
        said = f"train loss {epoch['train_loss']:.4f}, val accuracy {100 * epoch['val_accuracy']:.2f}%, {epoch['seconds']:.0f}s"
        say(f"{epoch_name(state.epoch, self.saving.train_config)}: {said}")

    @contextlib.contextmanager
    def stopping_in_one_line(self):
        """Ctrl-C or SIGTERM, a loss gone NaN, a refused --budget: one line saying what the folder holds."""
        try:
            yield
        except KeyboardInterrupt:
            where = f"{self.path / 'last.pt'} holds epoch {self.saved}" if self.saved else "no epoch had finished"
            raise Interrupted(
                f"interrupted; {where}; resume with: python fashion_trainer.py train --resume={self.path / 'last.pt'}"
            ) from None
        except LossNotFinite as exc:
            raise UserError(f"{exc}. The last good checkpoint is {self.path / 'best.pt'}") from exc
        except BudgetTooSmall:
            if self.main and self.made and not any(self.path.iterdir()):
                self.path.rmdir()  # refused before anything was saved: nothing is left behind
            raise

    def finish(self) -> None:
        """Say an early stop, and draw the final curve."""
        if self.main:
            if self.state.done < 1:
                say(f"early stop: no better validation accuracy for {self.saving.train_config.patience} epochs")
            self.curve.draw(self.state.history, self.path / "training_curve.png", final=True)


def restore_best(last: Checkpoint, run_dir: Path) -> None:
    """Rewrite best.pt from the last.pt continued where its epoch was the best and best.pt does not hold it."""
    training = last.training_state
    if training["best_epoch"] != training["epoch"]:
        return
    best = None
    with contextlib.suppress(UserError):
        best = Checkpoint.load(run_dir / "best.pt")
    if best is None or best.metrics.get("epoch") != training["epoch"]:
        dataclasses.replace(last, training_state=None).save(run_dir / "best.pt")


def _say_what_moved(last: Checkpoint, device: torch.device, ranks: Ranks) -> None:
    """A note when a run goes on on another kind of device or another number of processes than it ran on so far."""
    trained_on, world = last.training_state["device"], last.train_config.world
    moves = [f"on {trained_on} so far and goes on on {device.type}"] if trained_on != device.type else []
    moves += [f"in {world} process(es) so far and goes on in {ranks.world}"] if world != ranks.world else []
    if moves:
        say(
            f"note: this run trained {' and '.join(moves)}; its schedule follows the fraction of the run done, "
            "and it will not repeat an uninterrupted run bit for bit"
        )


# ----------------------------------------------------------------------------- the clock: seconds trained, the one-time start apart, --budget's checks


class TrainingClock:
    """A run's training seconds (steps, validations, saves; a continued run's on from its saved ones). The one-time start
    until the first step ends (CUDA context, cuDNN's first choices, compiling) is not counted, so a --budget never spends
    itself on it (on an H200 a 5 s budget did, and scored 8.86 %); the next steps time a step, which is said."""

    def __init__(self, config: TrainConfig, device: torch.device, ranks: Ranks, steps_per_epoch: int, opened: float, before: float):
        self.config, self.device, self.ranks, self.steps_per_epoch = config, device, ranks, steps_per_epoch
        self.opened, self.before, self.steps = opened, before, 0
        self.began: float | None = None  # when the first step had ended
        self.step_seconds: float | None = None
        self.tail, self.tail_began = 0.0, None  # an epoch's validation and saving, counted ahead so the last ones fit

    def seconds(self) -> float:
        """Training seconds so far (none before the first step has ended)."""
        return self.before + (0.0 if self.began is None else time.perf_counter() - self.began)

    def done(self, epochs_done: float) -> float:
        """The fraction of the run done, the same on every rank (a --budget run's clock is rank 0's)."""
        done = fraction_done(self.config, epochs_done, self.seconds() + self.ahead())
        return from_rank0([done], self.device, self.ranks)[0] if self.config.budget and self.ranks.world > 1 else done

    def step_begins(self, epochs_done: float) -> float:
        """Before each step: the fraction of the run done. The first step's end starts the clock; five more time a step."""
        self.steps += 1
        if self.steps == 2:
            synchronize(self.device)
            self.began = time.perf_counter()
        done = self.done(epochs_done)
        if self.steps == 7 or done >= 1:
            self.time_steps(self.steps - 2)
        return done

    def time_steps(self, steady: int) -> None:
        """What a step takes, once: over the steady steps so far (five, or fewer where an epoch or the run ends sooner)."""
        if self.step_seconds is None and steady > 0:
            synchronize(self.device)
            self.step_seconds = (time.perf_counter() - self.began) / steady
            say_step_seconds(self)

    def epoch_trained(self) -> None:
        """An epoch's steps are done: its validation and saving begin."""
        self.time_steps(self.steps - 1)
        self.tail_began = time.perf_counter()

    def ahead(self) -> float:
        """Seconds to count ahead: the last epoch's validation and saving (or this one's so far, if longer)."""
        return self.tail if self.tail_began is None else max(self.tail, time.perf_counter() - self.tail_began)

    def epoch_saved(self) -> None:
        """This epoch's validation and saving are done: the next is expected to take as long."""
        self.tail, self.tail_began = time.perf_counter() - self.tail_began, None


def say_step_seconds(clock: TrainingClock) -> None:
    """Once steps are timed: say the start, a step, an epoch and how many a --budget fits; refuse one under a quarter of an epoch."""
    config, ranks, steps_per_epoch = clock.config, clock.ranks, clock.steps_per_epoch
    step = from_rank0([clock.step_seconds], clock.device, ranks)[0] if ranks.world > 1 else clock.step_seconds
    epoch = max(step * steps_per_epoch, 1e-9)
    start = clock.began - clock.opened
    said = (
        f"start: {start:.1f} s to the end of the first step (not counted); a step takes {1000 * step:.0f} ms here, an epoch {epoch:.1f} s"
    )
    if config.budget:
        fits = config.budget_fraction * config.budget / epoch
        # corrupted MNIST on 2 cores (bf16): a tenth of an epoch scored 84-86 %, a fifth 91-93 %, a third 94-95 % (#35)
        if fits < 0.25:
            least = math.ceil(0.25 * epoch / config.budget_fraction)
            raise BudgetTooSmall(
                f"--budget={config.budget:g} fits about {fits:.2f} of an epoch here (a step takes {1000 * step:.0f} ms, an epoch of "
                f"{steps_per_epoch} steps {epoch:.1f} s): too little to learn from; give at least --budget={least} (a quarter "
                "of an epoch), or --epochs=1"
            )
        most = config.budget_cap * DATASETS[config.dataset].epochs
        capped = f" (the most a budget trains: {config.budget_cap}× the dataset's {DATASETS[config.dataset].epochs})" if fits > most else ""
        said += f", so about {min(fits, most):.1f} epochs fit in --budget={config.budget:g}{capped}"
    if ranks.main:
        say(said)


# ----------------------------------------------------------------------------- devices and torchrun: CUDA/MPS/CPU, bf16/fp16/fp32, processes


def device_available(name: str) -> bool:
    """Whether --device=name can be used here."""
    return {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}.get(name, lambda: True)()


def pick_device(name: str) -> torch.device:
    """Resolve --device: auto picks CUDA, then Apple MPS, then CPU; an unavailable one is an error."""
    cuda, mps = device_available("cuda"), device_available("mps")
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise UsageError("--device=cuda but no CUDA GPU is visible to PyTorch; use --device=auto or cpu")
    if name == "mps" and not mps:
        raise UsageError("--device=mps but Apple MPS is not available here; use --device=auto or cpu")
    return torch.device(name)


@dataclass(frozen=True)
class DeviceUse:
    """How training uses a device, decided by its type alone (so it is tested on any machine)."""

    data_on_device: bool  # the whole dataset is copied once; batches are indexed where the model is
    random_on_device: bool  # order and augmentation numbers are drawn there: no step waits for a host copy
    non_blocking: bool  # asynchronous host-to-device copies (on MPS they can read memory already freed)
    channels_last: bool  # faster convolutions (on MPS, channels-last batch norm has given wrong results)
    fused_adamw: bool  # one optimizer kernel (GradScaler.step then needs no .item())

    @classmethod
    def of(cls, device: torch.device) -> DeviceUse:
        """The policy for a device."""
        cuda, mps = device.type == "cuda", device.type == "mps"
        fused = not mps  # fused on the CPU too: 3 % faster steps than AdamW's loop of ~160 small operations (#35)
        return cls(data_on_device=cuda or mps, random_on_device=cuda, non_blocking=cuda, channels_last=not mps, fused_adamw=fused)


def synchronize(device: torch.device) -> None:
    """Wait until the device has done what it was given (a clock read after it then times the work, not its queueing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def autocast(device: torch.device, amp: torch.dtype | None):
    """An autocast context to `amp` on the device, or no context at all when training or predicting in fp32."""
    return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()


# AMD GPUs with bf16 matrix instructions: MI100 (gfx908), MI200 (gfx90a), MI300 and later (gfx94x, gfx95x), RDNA3 and
# later (gfx11xx, gfx12xx); an MI50 (gfx906) or an RDNA2 card (gfx103x) only emulates it.
ROCM_BF16_ARCHS = ("gfx908", "gfx90a", "gfx94", "gfx95", "gfx11", "gfx12")


def native_bf16_gpu(device: torch.device) -> bool:
    """Whether this GPU computes in bf16: NVIDIA compute capability 8.0 (Ampere) and later, or an AMD card listed above."""
    if torch.version.hip is not None:
        return torch.cuda.get_device_properties(device).gcnArchName.startswith(ROCM_BF16_ARCHS)
    return torch.cuda.get_device_capability(device) >= (8, 0)


def precision_name(amp: torch.dtype | None) -> str:
    """What --precision an autocast dtype is: bf16, fp16 or fp32."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The mixed-precision dtype for --precision; auto uses bf16 only where the hardware runs it natively."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type == "cpu":
            raise UsageError("--precision=fp16 needs a GPU; use bf16 or fp32 on the CPU")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        # bf16 only where the GPU computes in it; torch.cuda.is_bf16_supported() also says yes where bf16 is merely emulated
        # (a T4: slow, and Inductor has no bf16 code for it)
        return torch.bfloat16 if native_bf16_gpu(device) else torch.float16
    if device.type == "cpu":
        # bf16 doubles CPU training speed on AVX512-BF16/AMX chips and slows it down elsewhere
        native = (
            getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
            or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        )
        return torch.bfloat16 if native else None
    return None


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job (rank 0 of 1 when run plainly)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def launched(cls) -> Ranks:
        """This process's place as torchrun's environment names it, readable before the job is joined."""
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def start_distributed(device_name: str) -> tuple[Ranks, torch.device]:
    """Join the torchrun job if there is one (NCCL on GPUs, gloo on CPUs) and pick this rank's device."""
    launched = Ranks.launched()
    if launched.world == 1:
        device = pick_device(device_name)
        if device.type == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun with one process: its GPU, named as with more
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        return Ranks(), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if device_name in ("cuda", "mps") and not cuda:
        raise UsageError(f"--device={device_name} with torchrun needs CUDA GPUs; use --device=cpu for gloo on CPUs")
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return launched, device


def all_sum(values: Tensor, ranks: Ranks) -> Tensor:
    """Sum a tensor over all ranks (a no-op in a plain run)."""
    if ranks.world > 1:
        torch.distributed.all_reduce(values)
    return values


def from_rank0(values: list[float], device: torch.device, ranks: Ranks) -> list[float]:
    """Rank 0's numbers, on every rank (so every process takes the same decision)."""
    sent = torch.tensor(values if ranks.main else [0.0] * len(values), device=device if device.type == "cuda" else "cpu")
    return all_sum(sent, ranks).tolist()


def _stop_cleanly_on_sigterm() -> None:
    """Treat SIGTERM (a Colab runtime shutting down, a job scheduler) like Ctrl-C, so last.pt is named for resuming."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, interrupt)


# ----------------------------------------------------------------------------- safe writes and errors: one line for the user, files whole or not at all


def check_flags(argv: list[str]) -> None:
    """Refuse unknown commands and flags with one line and a suggestion, before fire sees them."""
    if not argv or argv[0].startswith("-"):
        return
    command = argv[0]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown command {command!r}{hint} (commands: {', '.join(COMMANDS)})")
    signature = inspect.signature(COMMANDS[command]).parameters
    params = set(signature)
    required = [p for p in signature.values() if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
    given = set(_flag_names(argv[1:]))
    if required and not [a for a in argv[1:] if not a.startswith("-")] and not given & ({p.name for p in required} | {"help", "h"}):
        raise UsageError(
            f"{command} needs a {required[0].name.upper()} argument, e.g. python fashion_trainer.py {command} checkpoints/<run>/best.pt"
        )
    for name in _flag_names(argv[1:]):
        bare = name[2:] if name.startswith("no") and name[2:] in params else name
        if bare not in params and name not in ("help", "h"):
            close = difflib.get_close_matches(name, params, n=1)
            hint = f"; did you mean --{close[0]}?" if close else ""
            raise UsageError(f"unknown flag --{name} for {command}{hint} (see: python fashion_trainer.py {command} --help)")


def _flag_names(argv: list[str]) -> list[str]:
    """The --flag names in an argument list, before fire's own `--` separator."""
    names = []
    for arg in argv:
        if arg == "--":
            break
        if arg.startswith("--") and len(arg) > 2:
            names.append(arg[2:].split("=", 1)[0].replace("-", "_"))
    return names


def _check_int(name: str, value: object, minimum: int) -> int:
    """An integer flag at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"--{name} must be an integer ≥ {minimum}, got {value!r}")
    return value


def _check_float(name: str, value: object, low: float, high: float = math.inf, low_open: bool = True, high_open: bool = True) -> float:
    """A number flag inside (low, high)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        bounds = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise UsageError(f"--{name} must be a number in {bounds}, got {value!r}")
    return float(value)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """A flag that takes one of a few names."""
    if value not in choices:
        raise UsageError(f"--{name} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def say(text: str) -> None:
    """A note, warning or report for the user, on stderr (between progress bars, not through them)."""
    tqdm.write(text, file=sys.stderr)


class UserError(Exception):
    """A mistake the user can fix (bad data, bad file): printed as one line, exit status 1."""

    exit_code = 1


class UsageError(UserError):
    """A bad command-line argument: printed as one line, exit status 2."""

    exit_code = 2


class Interrupted(UserError):
    """Ctrl-C or SIGTERM during training: last.pt holds the last finished epoch."""

    exit_code = 130


class BudgetTooSmall(UsageError):
    """A --budget that fits too little of an epoch to learn from, refused once a step has been timed."""


class ModelNotNamed(UsageError):
    """A checkpoint of the user's model where the command names no model file: code a checkpoint names is never imported."""

    def __init__(self, where: object, spec: str):
        super().__init__(f"{where} was trained with your model {spec}, and the trainer imports code only where you name it")
        self.spec = spec


class LossNotFinite(UserError):
    """The training loss became NaN or infinite: the run stops, its last good checkpoint named."""


class RunFinished(UserError):
    """`train` where the run folder already holds a finished run: nothing is overwritten (exit status 3)."""

    exit_code = 3
    results = ""  # the same said calmly, for `train --if_unfinished`: where the finished run's results are


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def restricted_load(load, where: object, allowed: str, what: str) -> object:
    """Run a restricted unpickling load: a refused object or a damaged file becomes one clear line."""
    try:
        return load()
    except pickle.UnpicklingError as exc:
        raise UserError(f"{where}: refused, it holds Python objects beyond {allowed} (unsafe to load, possibly malicious)") from exc
    except Exception as exc:  # a damaged file can fail in any way the unpickler has
        raise UserError(f"{where}: not a readable {what}, truncated or corrupt ({first_line(exc)})") from exc


def plain(value: object) -> object:
    """A value as JSON would give it back (tuples become lists): what checkpoints and history.json hold."""
    return json.loads(json.dumps(value))


def tuples(value: object) -> object:
    """Lists (as a checkpoint stores them) back to the tuples a frozen config holds, nested ones too."""
    return tuple(tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class WriteFailed(UserError):
    """A file could not be written (disk full, read-only, no permission, a mount gone): nothing half-written is left."""


# What an OSError's number means to someone whose disk filled up or whose Google Drive mount dropped.
WRITE_FAULTS = {
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is larger than this file system allows",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "no permission to write there",
    errno.EPERM: "no permission to write there",
    errno.EIO: "the disk or mount stopped answering (input/output error)",
    errno.ENOTCONN: "the mount went away (e.g. Google Drive disconnected)",
    errno.ESTALE: "the mount went away (stale file handle)",
    errno.ENOENT: "the folder is gone (a dropped Google Drive mount leaves an empty folder) or cannot be created",
    errno.ENOTDIR: "a file stands where a folder is needed",
    errno.EEXIST: "a file stands where a folder is needed",
}


def write_failure(exc: OSError, folder: Path) -> WriteFailed:
    """One line saying which folder could not be written and why, in plain words."""
    why = WRITE_FAULTS.get(exc.errno, first_line(exc))
    return WriteFailed(f"could not write to {folder}: {why}; fix that (free space, remount Drive), then run the same command again")


def sync_folder(folder: Path) -> None:
    """fsync a folder so a rename in it survives a power cut; where the OS cannot (Windows, some mounts), skip it."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(data: bytes, path: Path, previous: Path | None = None, make_folder: bool = False) -> Path:
    """Write a file whole or not at all: a synced temporary file renamed into place (with `previous`, the file replaced is
    first copied there). Its folder is made only with `make_folder`: a vanished run folder (a dropped Drive mount) must
    fail the write, not be recreated on the runtime's own disk."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        try:
            if make_folder:
                path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if previous is not None and path.is_file():
                write_atomic(path.read_bytes(), previous)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise write_failure(exc, path.parent) from exc
    sync_folder(path.parent)
    return path


def open_folder(folder: Path) -> tuple[int, int]:
    """Create a run folder, once, as its run starts; returns what identifies it for check_still_there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return folder_identity(folder)
    except OSError as exc:
        raise write_failure(exc, folder) from exc


def folder_identity(folder: Path) -> tuple[int, int]:
    """The file system and inode of a folder: a folder made again at the same path (or a remount) has others."""
    stat = folder.stat()
    return stat.st_dev, stat.st_ino


def check_still_there(folder: Path, opened: tuple[int, int]) -> None:
    """Refuse a run folder gone or replaced since it was opened (a dropped Drive mount leaves an empty folder there)."""
    with contextlib.suppress(OSError):
        if folder_identity(folder) == opened:
            return
    raise WriteFailed(
        f"the run folder {folder} is gone or is another folder now (did the Google Drive mount drop?); nothing was written "
        "there or elsewhere: once it is back, run the same command again"
    )


def save_torch(obj: object, path: Path, previous: Path | None = None) -> None:
    """torch.save, written whole or not at all (serialised in memory first: a full disk then raises a plain OSError)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(buffer.getvalue(), path, previous)


def check_writable(folder: Path) -> Path:
    """Prove before any data is read that `folder` can be made and written; folders made for the proof are removed."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise write_failure(exc, folder) from exc
    finally:
        for made in missing:  # deepest first
            with contextlib.suppress(OSError):
                made.rmdir()
    return folder


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported only when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, make_folder: bool = True) -> Path:
    """Write a figure as PNG, whole or not at all, then close it (into a folder it creates, unless told not to)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    _pyplot().close(fig)
    return write_atomic(buffer.getvalue(), path, make_folder=make_folder)


# ----------------------------------------------------------------------------- data files and downloads: the layouts, finding the course's folders, verified downloads


@dataclass(frozen=True)
class DataFiles:
    """How a dataset's files are laid out, found and fetched."""

    reader: str  # "course" (corrupted MNIST's layouts), "idx" or "cifar" (read_dataset)
    folders: tuple[str, ...]  # looked in without --data_dir, in this order; `prepare` builds or downloads into the first
    # file name -> "sha256:<hex>" of the decompressed content (survives a mirror's recompression) or "md5:<hex>" of the file;
    # empty for data that is built, not downloaded
    checksums: dict[str, str] = field(default_factory=dict)
    alternatives: dict[str, tuple[str, ...]] = field(default_factory=dict)  # a file also counts as present if one of these is
    mirrors: tuple[str, ...] = ()


CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
COURSE_FOLDERS = ("corruptedmnist", "corruptmnist", "corruptmnist_v2", "corruptmnist_v1")  # ours, then the course's years' names
DATA_FILES = {
    # our `prepare` output and the course's folders, in data/ and data/raw/, then the course's data/processed/; where none
    # holds the files, the bundled sample
    DEFAULT_DATASET: DataFiles(
        "course",
        folders=(*(f"data/{raw}{name}" for raw in ("", "raw/") for name in COURSE_FOLDERS), "data/raw", "data/processed"),
    ),
    "mnist": DataFiles(
        "idx",
        folders=("data/mnist",),
        checksums={
            "train-images-idx3-ubyte.gz": "sha256:ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte.gz": "sha256:65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte.gz": "sha256:0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte.gz": "sha256:ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    ),
    "fashionmnist": DataFiles(
        "idx",
        folders=("data/fashionmnist", "/usr/share/datasets/fashion-mnist"),  # and where Debian's dataset-fashion-mnist puts them
        checksums={
            "train-images-idx3-ubyte.gz": "sha256:c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte.gz": "sha256:bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte.gz": "sha256:5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte.gz": "sha256:0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
    "cifar": DataFiles(
        "cifar",
        folders=("data/cifar",),
        checksums={CIFAR_ARCHIVE: "md5:c58f30108f718f92721af3b95e74349a"},
        alternatives={CIFAR_ARCHIVE: ("cifar-10-batches-py/data_batch_1", "data_batch_1")},  # the archive already extracted
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
    ),
}


def _check_test_data(ckpt: Checkpoint, dataset: str, data: Data, test_fingerprint: str) -> None:
    """Refuse test images of another shape than the model's; warn where they are not those it was trained beside."""
    trained_on, shape = list(ckpt.model_config.input_shape), list(data.test_images.shape[1:])
    if shape != trained_on:
        raise UserError(
            f"{ckpt.path} takes {'×'.join(map(str, trained_on))} images, {dataset} has {'×'.join(map(str, shape))}; pass the --dataset it was trained on"
        )
    expected = ckpt.data_fingerprint.get("test")
    if expected and expected != test_fingerprint:
        say(f"warning: this test data ({data.source}) differs from the test data the model was trained beside")


def _say_test_turns(degrees: list[float], confidence: float) -> None:
    """evaluate's note on the test-time turns it averages, and for which images."""
    if degrees:
        unsure = "" if confidence >= 1 else f" for digits whose single view is less than {100 * confidence:g} % sure"
        turns = ", ".join(f"{a:g}" for a in degrees)
        say(f"test-time augmentation: averaging turns of {turns} degrees{unsure} (--tta=False: one view)")


def _sample_caution(ckpt: Checkpoint, data: Data) -> str:
    """A note for the result line when a checkpoint trained on other data is scored on the bundled sample."""
    on_sample = Path(data.source).resolve() == SAMPLE_DATA_DIR.resolve()
    trained_on_sample = Path(str(ckpt.train_config.data_dir)).resolve() == SAMPLE_DATA_DIR.resolve()
    if not on_sample or trained_on_sample:
        return ""
    return (
        " (on the bundled sample, whose digits are MNIST training digits: the course's data and other builds may hold them,"
        " so this can overstate the accuracy; pass --data_dir)"
    )


SAMPLE_DATA_DIR = ROOT / "data" / "sample_corruptedmnist"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
GET_DATA_HINT = "build the full data with: python fashion_trainer.py prepare"
LAYOUTS = "train_<i>.npz + test.npz, train_images_<i>.pt + train_target_<i>.pt, or train_images.pt + train_target.pt, with test_images.pt + test_target.pt"


def locate(dataset: str, data_dir: str | None) -> Path:
    """A dataset's folder: --data_dir, the first of its folders (DATA_FILES) holding its files, or a verified download."""
    files = DATA_FILES[dataset]
    if not files.checksums:  # built by `prepare`, never downloaded
        return resolve_data_dir(data_dir)
    if data_dir is not None:
        return existing_dir(data_dir, f"leave it out to use or download {files.folders[0]}/")
    for folder in map(Path, files.folders):
        if all(_present(folder, name, files) for name in files.checksums):
            return folder
    return fetch(dataset, Path(files.folders[0]), files.mirrors)


def _present(folder: Path, name: str, files: DataFiles) -> bool:
    """Whether a dataset file is in a folder: gzipped or not, or in one of its alternative forms."""
    names = (name, name.removesuffix(".gz"), *files.alternatives.get(name, ()))
    return any((folder / n).is_file() for n in names)


def resolve_data_dir(data_dir: str | None) -> Path:
    """Pick the corrupted-MNIST folder: --data_dir, else the first of its table's folders holding a layout, else the bundled sample."""
    if data_dir is not None:
        return existing_dir(data_dir, f"{GET_DATA_HINT} --out={data_dir}")
    searched = [Path(f) for f in DATA_FILES[DEFAULT_DATASET].folders]
    found = find_corrupted_mnist(searched)
    if found is not None:
        say(f"data: {found[0]} ({found[1]})")
        return found[0]
    looked = [folder for folder in searched if folder.is_dir()]
    if looked:
        held = "; ".join(f"{folder} holds {_contents(folder)}" for folder in looked)
        raise UserError(
            f"no corrupted-MNIST files ({LAYOUTS}) where they are looked for: {held}. Pass --data_dir=FOLDER, or {GET_DATA_HINT}"
        )
    say(
        f"note: no corrupted-MNIST folder here ({searched[0]}/, data/corruptmnist*/, data/raw/, data/processed/), "
        f"so using the bundled sample (4,000 training digits); for the full data: python fashion_trainer.py prepare"
    )
    return SAMPLE_DATA_DIR


def find_corrupted_mnist(folders: tuple[Path, ...] | list[Path]) -> tuple[Path, str] | None:
    """The first of these folders that holds a corrupted-MNIST layout, with the layout's name."""
    for folder in folders:
        layout = corrupted_mnist_layout(folder) if folder.is_dir() else None
        if layout is not None:
            return folder, layout[0]
    return None


def existing_dir(data_dir: str, hint: str) -> Path:
    """An explicit --data_dir: it must exist, it is never silently replaced by a default."""
    path = Path(str(data_dir)).expanduser()
    if not path.is_dir():
        raise UserError(f"--data_dir {path} is not a folder; {hint}")
    return path


def corrupted_mnist_layout(folder: Path) -> tuple[str, list[tuple[Path, Path | None]]] | None:
    """The course layout a folder holds, as (name, [(images file, labels file or None for .npz)], test last); None if none."""
    npz_shards = sorted(folder.glob("train_*.npz"), key=_shard_number)
    pt_shards = sorted(folder.glob("train_images_*.pt"), key=_shard_number)
    single = folder / "train_images.pt"
    if npz_shards and (pt_shards or single.is_file()):
        raise UserError(f"{folder}: mixes the .npz and the .pt layout; keep one of them in the folder")
    if npz_shards:
        return f"npz layout, {len(npz_shards)} train shards", [(p, None) for p in npz_shards] + [(folder / "test.npz", None)]
    images = pt_shards or ([single] if single.is_file() else [])
    if not images:
        return None
    pairs = [(p, p.with_name(p.name.replace("train_images", "train_target"))) for p in images]
    name = f".pt layout, {len(pt_shards)} train shards" if pt_shards else ".pt layout, one train file"
    return name, [*pairs, (folder / "test_images.pt", folder / "test_target.pt")]


def read_corrupted_mnist(folder: Path, classes: list[str] = DIGITS, train: bool = True) -> Data:
    """Read a course layout (LAYOUTS) into memory; train=False reads the test split alone."""
    layout = corrupted_mnist_layout(folder)
    if layout is None:
        raise UserError(f"{folder}: {_no_layout_reason(folder)}")
    files = layout[1] if train else layout[1][-1:]
    for images, labels in files:
        for p in (images, labels):
            if p is not None and not p.is_file():
                raise UserError(f"{folder}: {p.name} is missing (the layout needs {images.name} and its partner files)")
    checked = []
    for images_file, labels_file in files:
        images, labels = _read_npz(images_file) if labels_file is None else (_read_pt(images_file), _read_pt(labels_file))
        x = check_images(images, images_file)
        checked.append((x, check_labels(labels, len(x), labels_file or images_file)))
    return Data.of(checked[:-1], checked[-1], classes, folder, (1, 28, 28))


def _shard_number(path: Path) -> int:
    """The integer in a shard's name, so train_10 sorts after train_9."""
    return int(re.findall(r"\d+", path.stem)[-1])


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read `images` and `labels` from a course .npz archive."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("images", "labels") if k not in archive.files]
            if missing:
                raise UserError(f"{path}: missing key {missing[0]!r} (found {archive.files}); expected 'images' and 'labels'")
            return archive["images"], archive["labels"]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise UserError(f"{path}: not a readable .npz archive ({exc}); re-copy it or rebuild the data with `prepare`") from exc


def _read_pt(path: Path) -> np.ndarray:
    """Read one tensor from a course .pt file, refusing anything but plain tensors."""
    value = restricted_load(lambda: torch.load(path, map_location="cpu", weights_only=True), path, "a plain tensor", ".pt tensor file")
    if not isinstance(value, Tensor):
        raise UserError(f"{path}: holds a {type(value).__name__}, expected one tensor")
    return value.numpy()


def check_images(images: np.ndarray, path: Path, shape: tuple[int, int, int] = (1, 28, 28)) -> Tensor:
    """Validate images ([N, H, W], [N, H*W] or [N, C, H, W]; uint8 0-255 or float) as float [N, C, H, W]."""
    c, h, w = shape
    n = images.shape[0] if images.ndim else 0
    if (images.ndim == 2 and images.shape[1] == c * h * w) or (images.ndim == 3 and c == 1 and images.shape[1:] == (h, w)):
        images = images.reshape(n, c, h, w)
    elif images.ndim == 4 and images.shape[1:] == (h, w, c) and c > 1:
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1:] != (c, h, w):
        raise UserError(f"{path}: images have shape {list(images.shape)}, expected [N, {h}, {w}], [N, {c * h * w}] or [N, {c}, {h}, {w}]")
    if images.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255)
    if np.issubdtype(images.dtype, np.integer):
        if images.size and (images.min() < 0 or images.max() > 255):
            raise UserError(f"{path}: integer pixels outside 0..255")
        return torch.from_numpy(images.astype(np.float32) / 255)
    if not np.issubdtype(images.dtype, np.floating):
        raise UserError(f"{path}: images have dtype {images.dtype}, expected uint8 or float")
    if not np.isfinite(images).all():
        raise UserError(f"{path}: images contain NaN or infinite pixels")
    images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    low, high = (float(images.min()), float(images.max())) if images.numel() else (0.0, 1.0)
    if low < 0 or high > 1:  # standardised pixels (the course's data/processed files): back to 0..1, background 0
        images = (images - low) / max(high - low, 1e-12)
    return images


def check_labels(labels: np.ndarray, n_images: int, path: Path, num_classes: int = 10) -> Tensor:
    """Validate integer class labels 0..num_classes-1, one per image, as int64."""
    labels = labels.reshape(-1) if labels.ndim == 2 and 1 in labels.shape else labels
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_:
        raise UserError(f"{path}: labels must be a 1-D integer array, got {labels.dtype} of shape {list(labels.shape)}")
    if len(labels) != n_images:
        raise UserError(f"{path}: {n_images} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{path}: labels outside 0..{num_classes - 1} (found {labels.min()}..{labels.max()})")
    return torch.from_numpy(labels.astype(np.int64))


def _contents(folder: Path) -> str:
    """A few of the names in a folder, for error messages."""
    names = sorted(p.name for p in folder.iterdir())
    return ", ".join(names[:6]) + (f", … ({len(names)} in all)" if len(names) > 6 else "") if names else "nothing"


def _no_layout_reason(folder: Path) -> str:
    """Why a folder holds no corrupted-MNIST layout, naming what it does hold."""
    if not any(folder.iterdir()):
        return f"is empty; {GET_DATA_HINT} --out={folder}"
    if any(folder.glob("*idx3-ubyte*")):
        return f"holds raw MNIST IDX files, not corrupted MNIST; build it with: python fashion_trainer.py prepare --source={folder}"
    return f"no corrupted-MNIST files ({LAYOUTS}); it holds {_contents(folder)}. Pass --data_dir=FOLDER that holds them, or {GET_DATA_HINT}"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip or raw) of unsigned bytes, checking magic number and dimensions."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); re-download it") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise UserError(f"{path}: not an IDX file of unsigned bytes (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    if len(raw) != 4 + 4 * ndim + math.prod(dims):
        raise UserError(f"{path}: header says {list(dims)} but the file holds {len(raw)} bytes; it is truncated or corrupt")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def _find_idx(folder: Path, stem: str) -> Path:
    """The IDX file `stem` in a folder, gzipped or raw."""
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{folder}: no {stem}.gz; the folder must hold the four official IDX files ({', '.join(IDX_FILES.values())})")


def read_idx_arrays(folder: Path, splits: tuple[str, ...] = ("train", "test")) -> dict[str, np.ndarray]:
    """The IDX arrays of MNIST or Fashion-MNIST (both splits, or those named), checked to be 28×28 images with one label each."""
    arrays = {key: read_idx(_find_idx(folder, stem)) for key, stem in IDX_FILES.items() if key.split("_")[0] in splits}
    for split in splits:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{folder}: the {split} IDX files are not 28×28 images with one label each")
    return arrays


def read_idx_dataset(folder: Path, classes: list[str], train: bool = True) -> Data:
    """MNIST or Fashion-MNIST from its four IDX files (the two test files alone with train=False)."""
    splits = ("train", "test") if train else ("test",)
    arrays, parts = read_idx_arrays(folder, splits), []
    for split in splits:
        images = check_images(arrays[f"{split}_images"], folder)
        parts.append((images, check_labels(arrays[f"{split}_labels"], len(images), folder, len(classes))))
    return Data.of(parts[:-1], parts[-1], classes, folder, (1, 28, 28))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: CIFAR batches come from the internet."""

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own array reconstructor, whatever its module
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # how Python 3's protocol 2 stores bytes
            return codecs.encode
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def _unpickle_batch(raw: bytes, where: str) -> dict:
    """One CIFAR batch dict, through the restricted unpickler."""
    batch = restricted_load(
        lambda: _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load(), where, "the CIFAR-10 format", "CIFAR-10 batch"
    )
    if not isinstance(batch, dict):
        raise UserError(f"{where}: not a CIFAR-10 batch (a {type(batch).__name__}, expected a dict)")
    return batch


def _cifar_members(folder: Path) -> dict[str, bytes]:
    """The raw batch files of CIFAR-10 from the official archive or its extracted folder."""
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    archive = folder / CIFAR_ARCHIVE
    if archive.is_file():
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                missing = [n for n in names[:-1] if n not in members]
                if missing:
                    raise UserError(f"{archive}: has no {missing[0]}; it is not the official cifar-10-python archive")
                return {n: tar.extractfile(members[n]).read() for n in names if n in members}
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise UserError(f"{archive}: unreadable ({first_line(exc)}); delete it and download it again") from exc
    batches = folder / "cifar-10-batches-py" if (folder / "cifar-10-batches-py").is_dir() else folder
    missing = [n for n in names[:-1] if not (batches / n).is_file()]
    if missing:
        raise UserError(
            f"{batches}: no {CIFAR_ARCHIVE} and no {missing[0]}; put the official archive in data/cifar/ or leave --data_dir out to download it"
        )
    return {n: (batches / n).read_bytes() for n in names if (batches / n).is_file()}


def read_cifar(folder: Path, classes: list[str], train: bool = True) -> Data:
    """CIFAR-10 from the official python archive: pickled dicts with b"data" uint8 [N, 3072] and b"labels"."""
    members = _cifar_members(folder)
    parts = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6) if train), "test_batch"]:
        batch = _unpickle_batch(members[name], f"{folder}/{name}")
        if b"data" not in batch or b"labels" not in batch:
            raise UserError(f"{folder}/{name}: missing b'data' or b'labels'")
        data = np.asarray(batch[b"data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise UserError(f"{folder}/{name}: data must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}")
        images = check_images(data, Path(f"{folder}/{name}"), (3, 32, 32))
        parts[name] = (images, check_labels(np.asarray(batch[b"labels"]), len(images), Path(f"{folder}/{name}")))
    if "batches.meta" in members:
        names = _unpickle_batch(members["batches.meta"], f"{folder}/batches.meta").get(b"label_names")
        if isinstance(names, list) and len(names) == 10 and all(isinstance(n, bytes) for n in names):
            classes = [n.decode("utf-8", "replace") for n in names]
    return Data.of([parts[f"data_batch_{i}"] for i in range(1, 6)] if train else [], parts["test_batch"], classes, folder, (3, 32, 32))


def checksum_matches(path: Path, checksum: str, gzipped: bool) -> bool:
    """Whether a file matches "sha256:<hex>" (of its content, decompressed if gzipped) or "md5:<hex>" (of the file)."""
    algorithm, expected = checksum.split(":", 1)
    try:
        with gzip.open(path, "rb") if algorithm == "sha256" and gzipped else open(path, "rb") as f:
            digest = hashlib.new(algorithm)
            while chunk := f.read(1 << 20):  # hashlib.file_digest would need Python 3.11
                digest.update(chunk)
            return digest.hexdigest() == expected
    except (OSError, EOFError) as exc:
        raise UserError(f"not a valid gzip file ({exc})") from exc


def download(url: str, dest: Path, checksum: str | None = None, timeout: float = 30.0) -> Path:
    """Download url to dest through a temporary file, verify its checksum, then rename it into place."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise write_failure(exc, dest.parent) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
        if checksum is not None and not checksum_matches(tmp, checksum, gzipped=dest.suffix == ".gz"):
            raise UserError(f"checksum mismatch (expected {checksum[:20]}…); the download is damaged, try again or another mirror")
        os.replace(tmp, dest)
        return dest
    except UserError as exc:
        raise UserError(f"{url}: {exc}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        if not isinstance(exc, (urllib.error.URLError, TimeoutError, ConnectionError)) and exc.errno in WRITE_FAULTS:
            raise write_failure(exc, dest.parent) from exc  # our disk, not the network: another mirror would not help
        reason = f"HTTP {exc.code} {exc.reason}" if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", None) or exc
        raise UserError(f"{url}: download failed ({reason})") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def fetch(dataset: str, folder: Path, mirrors: tuple[str, ...], offline_hint: str = "then pass --data_dir=FOLDER") -> Path:
    """Make sure a dataset's files are in `folder`, downloading and verifying what is missing."""
    files = DATA_FILES[dataset]
    for name, checksum in files.checksums.items():
        if _present(folder, name, files):
            continue
        errors = []
        for mirror in mirrors:
            try:
                download(mirror.rstrip("/") + "/" + name, folder / name, checksum)
                break
            except WriteFailed:
                raise
            except UserError as exc:
                errors.append(str(exc))
        else:
            raise UserError(
                f"could not download {name} ({'; '.join(errors) or 'no mirror'}); offline? put {', '.join(files.checksums)} "
                f"into a folder by hand, {offline_hint}"
            )
    return folder


# ----------------------------------------------------------------------------- prepare: corrupted MNIST built from MNIST, per image or as the course does


def prepare(
    dataset: str = DEFAULT_DATASET,
    out: str | None = None,
    source: str | None = None,
    mode: str = "per-image",
    degrees: float = 50.0,
    interpolation: str = "nearest",
    train_shards: int | None = None,
    shard_size: int = 5000,
    test_size: int | None = None,
    seed: int = 0,
    mirror: str | None = None,
    force: bool = False,
    if_missing: bool = False,
) -> None:
    """Build corrupted MNIST from MNIST (--source=DIR or a download), per image or as the course's generator does; or fetch --dataset.

    Args:
        dataset: corruptedmnist builds it; another name only downloads and checks that dataset
        out: folder to write (default: data/corruptedmnist or data/<dataset>)
        source: folder holding the four official MNIST IDX files (default: download them into data/mnist)
        mode: per-image (each digit its own angle, npz layout, 5 × 5,000 / 10,000) or course (one angle per shard and one
            for the test chunk, the course's .pt layout, 6 × 5,000 / 5,000)
        degrees: largest turn, either way
        interpolation: nearest (the course's and torchvision's default) or bilinear
        train_shards: number of training shards (default: 5 per-image, 6 course)
        shard_size: images per training shard
        test_size: test images (default: 10,000 per-image, 5,000 course)
        seed: seeds the choice of digits and the angles
        mirror: download from this URL instead of the official mirrors
        force: replace an existing --out
        if_missing: do nothing where `train` would already find corrupted MNIST (--out, or the folders it searches); a
            note says so where that data was built with other settings than these
    """
    _check_dataset(dataset)
    files = DATA_FILES[dataset]
    _check_bool("if_missing", if_missing)
    if files.checksums:
        return _fetch_dataset(dataset, out, source, mirror)
    plan = _prepare_plan(mode, degrees, interpolation, train_shards, shard_size, test_size, seed)
    found = find_corrupted_mnist([Path(str(out))] if out else [Path(f) for f in files.folders]) if if_missing else None
    if found is not None:
        return _say_what_is_built(*found, plan)
    out_dir = Path(str(out or files.folders[0])).expanduser()
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise UsageError(f"--out {out_dir} already holds data; pass --force to rebuild it")
    check_writable(out_dir.parent)  # before any download or reading
    splits, plan = build_corrupted_mnist(read_idx_arrays(_mnist_source(source, mirror)), plan)
    write_corrupted_mnist(out_dir, splits, plan)
    angles = "one angle per shard" if mode == "course" else "each image its own angle"
    print(
        f"wrote {plan['train_shards']} × {plan['shard_size']} train and {plan['test_size']} test images rotated within ±{degrees:g}° "
        f"({angles}, {interpolation}) to {out_dir}"
    )


def _prepare_plan(mode: str, degrees: float, interpolation: str, train_shards, shard_size: int, test_size, seed: int) -> dict:
    """`prepare`'s flags checked, with the sizes its --mode implies where they are not given: what prepare.json records."""
    course = _check_choice("mode", mode, ("per-image", "course")) == "course"
    return {
        "mode": mode,
        "interpolation": _check_choice("interpolation", interpolation, ("nearest", "bilinear")),
        "seed": _check_int("seed", seed, 0),
        "degrees": _check_float("degrees", degrees, 0, 180, low_open=False, high_open=False),
        "train_shards": _check_int("train_shards", (6 if course else 5) if train_shards is None else train_shards, 1),
        "shard_size": _check_int("shard_size", shard_size, 1),
        "test_size": _check_int("test_size", (5000 if course else 10000) if test_size is None else test_size, 1),
    }


def _fetch_dataset(dataset: str, out: str | None, source: str | None, mirror: str | None) -> None:
    """`prepare --dataset=NAME` of a downloadable dataset: fetch its files, check them and say where they are."""
    if source is not None:
        raise UsageError(f"--source is for building corruptedmnist; for {dataset} put the files in a folder and pass --data_dir to train")
    files = DATA_FILES[dataset]
    folder = fetch(dataset, Path(str(out or files.folders[0])), (str(mirror),) if mirror else files.mirrors)
    data = read_dataset(dataset, folder)
    print(f"{dataset} is ready in {folder}: {len(data.train_images)} train / {len(data.test_images)} test images")


def _mnist_source(source: str | None, mirror: str | None) -> Path:
    """The folder of the four MNIST IDX files that `prepare` builds from: --source, or a verified download."""
    if source is None:
        mirrors = (str(mirror),) if mirror else DATA_FILES["mnist"].mirrors
        return fetch("mnist", Path(DATA_FILES["mnist"].folders[0]), mirrors, "then run: python fashion_trainer.py prepare --source=FOLDER")
    src = Path(str(source)).expanduser()
    if not src.is_dir():
        raise UserError(f"--source {src} is not a folder; it must hold the four official MNIST .gz files")
    return src


def _say_what_is_built(folder: Path, layout: str, plan: dict) -> None:
    """`prepare --if_missing` where the data exists: one line saying so, and naming the settings it was built with if they differ."""
    built = folder / "prepare.json"
    before = json.loads(built.read_text()) if built.is_file() else plan  # the course's own files: nothing to compare
    other = [key for key in plan if before.get(key) != plan[key]]
    if not other:
        print(f"data: {folder} already holds corrupted MNIST ({layout}); nothing to build")
        return
    was, asked = (" ".join(f"--{k}={d.get(k)}" for k in other) for d in (before, plan))
    print(
        f"note: {folder} already holds corrupted MNIST built with {was}, not {asked}: nothing was built and train uses it as "
        f"it is; to switch, prepare --force (replaces it) or --out=ANOTHER_FOLDER and train --data_dir=ANOTHER_FOLDER"
    )


def random_angles(n: int, degrees: float, generator: torch.Generator) -> Tensor:
    """n uniform random angles in ±degrees."""
    return (torch.rand(n, generator=generator) * 2 - 1) * degrees


def rotate_all(images: Tensor, angles: Tensor, mode: str = "bilinear", chunk: int = 8192) -> Tensor:
    """Rotate each image by its angle (degrees, counter-clockwise, about the centre, zero fill), in chunks."""
    parts = [affine_warp(images[i : i + chunk], angles[i : i + chunk], mode=mode) for i in range(0, len(images), chunk)]
    return torch.cat(parts).clamp_(0, 1)


def sample_digits(labels: np.ndarray, per_class: int = 500) -> np.ndarray:
    """Mask of the MNIST training digits the bundled sample is made of: the first 500 of each class (indices 0-5,847)."""
    mask = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        mask[np.flatnonzero(labels == digit)[:per_class]] = True
    return mask


def build_corrupted_mnist(arrays: dict[str, np.ndarray], plan: dict) -> tuple[list[tuple[Tensor, Tensor]], dict]:
    """Turned train shards and the test split from the MNIST arrays, as the plan says (the plan gains the angles drawn);
    training digits come from the MNIST training digits outside the bundled sample, so the sample stays held out."""
    n_train, size = plan["train_shards"] * plan["shard_size"], plan["shard_size"]
    pool = np.flatnonzero(~sample_digits(arrays["train_labels"]))
    if n_train > len(pool) or plan["test_size"] > len(arrays["test_images"]):
        raise UsageError(
            f"asked for {n_train} train / {plan['test_size']} test images; MNIST has {len(pool)} training digits outside the "
            f"bundled sample and {len(arrays['test_images'])} test digits"
        )
    generator = torch.Generator().manual_seed(plan["seed"])
    pick = pool[torch.randperm(len(pool), generator=generator)[:n_train].numpy()]
    to_float = lambda a: torch.from_numpy(a).float().div_(255).unsqueeze(1)  # noqa: E731
    train_x, train_y = to_float(arrays["train_images"][pick]), torch.from_numpy(arrays["train_labels"][pick].astype(np.int64))
    test_x = to_float(arrays["test_images"][: plan["test_size"]])
    test_y = torch.from_numpy(arrays["test_labels"][: plan["test_size"]].astype(np.int64))
    if plan["mode"] == "course":  # the course's generator: RandomRotation on a whole chunk turns every image in it alike
        chunk_angles = random_angles(plan["train_shards"] + 1, plan["degrees"], generator)
        train_angles, test_angles = chunk_angles[:-1].repeat_interleave(size), chunk_angles[-1].expand(len(test_x))
        plan |= {"train_angles": [round(float(a), 3) for a in chunk_angles[:-1]], "test_angle": round(float(chunk_angles[-1]), 3)}
    else:
        train_angles = random_angles(n_train, plan["degrees"], generator)
        test_angles = random_angles(len(test_x), plan["degrees"], generator)
    train_x = rotate_all(train_x, train_angles, plan["interpolation"])
    test_x = rotate_all(test_x, test_angles, plan["interpolation"])
    shards = [(train_x[i : i + size], train_y[i : i + size]) for i in range(0, n_train, size)]
    return [*shards, (test_x, test_y)], plan


def write_corrupted_mnist(out_dir: Path, splits: list[tuple[Tensor, Tensor]], plan: dict) -> None:
    """Write the shards (npz per-image, the course's .pt layout in course mode) and prepare.json, all or nothing."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", suffix=".tmp", dir=out_dir.parent))
    except OSError as exc:
        raise write_failure(exc, out_dir.parent) from exc
    try:
        course = plan["mode"] == "course"
        names = [f"train_images_{i}.pt" if course else f"train_{i}.npz" for i in range(len(splits) - 1)]
        for name, (x, y) in zip([*names, "test_images.pt" if course else "test.npz"], tqdm(splits, desc="write shards")):
            (write_pt if course else write_npz)(tmp / name, x, y)
        write_atomic((json.dumps(plan, indent=1) + "\n").encode(), tmp / "prepare.json")
        _replace_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_npz(path: Path, images: Tensor, labels: Tensor) -> None:
    """Write one course shard: uint8 images [N, 28, 28] and int64 labels."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images.mul(255).round().to(torch.uint8).squeeze(1).numpy(), labels=labels.numpy().astype(np.int64))
    write_atomic(buffer.getvalue(), path)


def write_pt(images_path: Path, images: Tensor, labels: Tensor) -> None:
    """Write one shard as the course's .pt files: float32 images [N, 28, 28] in 0..1 and int64 targets beside them."""
    save_torch(images.squeeze(1).clone(), images_path)
    save_torch(labels.clone(), images_path.with_name(images_path.name.replace("_images", "_target")))


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move a finished folder into place, replacing an old one only after the new one is complete."""
    old = out.with_name(out.name + ".old")
    try:
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as exc:
        raise write_failure(exc, out.parent) from exc
    sync_folder(out.parent)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- pictures: the training curve and the confusion matrix


class CurveRedraws:
    """When training_curve.png is redrawn: after every epoch, unless that would spend more than a tenth of the run on
    drawing (a drawing takes 0.2-0.3 s here, an epoch of tiny data or on a fast GPU less than that); always at the end."""

    def __init__(self):
        self.next_at, self.epoch = 0.0, 0

    def draw(self, history: dict, path: Path, final: bool = False) -> None:
        """Redraw the curve if it is due (or `final` and not yet showing the last epoch)."""
        epoch = len(history["epochs"])
        if epoch == self.epoch or not (final or time.perf_counter() >= self.next_at):
            return
        began = time.perf_counter()
        plot_training_curve(history, path)
        self.next_at, self.epoch = began + 10 * (time.perf_counter() - began), epoch


def plot_training_curve(history: dict, path: Path) -> None:
    """Training loss per step and validation accuracy per epoch, as a PNG."""
    plt = _pyplot()
    steps = [s["step"] for s in history["steps"]]
    losses = [s["loss"] for s in history["steps"]]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(steps, losses, lw=0.6, color="tab:blue", alpha=0.4, label="training loss (per step)")
    if len(losses) >= 20:
        k = max(1, len(losses) // 50)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, color="tab:blue", label=f"training loss ({k}-step mean)")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    acc = ax.twinx()
    ends = [e["step"] for e in history["epochs"]]
    acc.plot(ends, [100 * e["val_accuracy"] for e in history["epochs"]], "o-", color="tab:orange", label="validation accuracy")
    acc.set_ylabel("validation accuracy (%)")
    lines = ax.get_legend_handles_labels()[0] + acc.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], loc="center right")
    ax.set_title("fashion_trainer: training curve")
    fig.tight_layout()
    save_figure(fig, path, make_folder=False)  # into the run folder, which fit opened once


def plot_confusion(confusion: Tensor, classes: list[str], title: str, path: Path) -> None:
    """A confusion matrix (rows: true class, columns: predicted) with counts, as a PNG."""
    plt = _pyplot()

    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * n, 1.0 + 0.55 * n), dpi=100)
    rates = confusion.float() / confusion.sum(1, keepdim=True).clamp_min(1)
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if confusion[i, j]:
                ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7, color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------- runs side by side, a learning rate to try: compare, lr_find


def compare(*runs: str, plot: str | None = None) -> None:
    """Runs side by side: a table (the settings that differ, epochs, accuracies, seconds, device) and one PNG of their curves.

    Args:
        runs: run folders written by `train` (default: every folder under checkpoints/)
        plot: where to write the PNG of validation accuracy and training loss per epoch (default: compare.png beside the runs)
    """
    folders = [Path(str(r)).expanduser() for r in runs] or sorted(p for p in Path("checkpoints").glob("*") if p.is_dir())
    found = [run for run in map(read_run, folders) if run is not None]
    if not found:
        where = ", ".join(map(str, folders)) or "checkpoints/ (no run folders)"
        raise UserError(f"no run to compare in {where}; train one with: python fashion_trainer.py train")
    path = Path(str(plot)) if plot else Path(os.path.commonpath([run["folder"].resolve() for run in found])) / "compare.png"
    if len(found) == 1 and path.parent == found[0]["folder"].resolve():
        path = path.parent.parent / "compare.png"  # one run: beside it, not among its own files
    check_writable(path.parent)
    settings = differing_settings([run["config"] for run in found])
    rows = [["run", "settings that differ", "epochs", "best val", "test", "seconds", "device"]]
    for run, differ in zip(found, settings):
        last = run["epochs"][-1]
        best = run["best"]["val_accuracy"]
        rows.append(
            [run["folder"].name, differ or "-", run["status"], f"{100 * best:.2f}%", run["test"], f"{last['seconds']:.0f}", run["device"]]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    plot_comparison(found, [d or run["folder"].name for run, d in zip(found, settings)], path)
    say(f"curves: {path}")


def read_run(folder: Path) -> dict | None:
    """A run folder's history, whether it is finished, its test result and where it ran; None (and a note) if it is no run."""
    try:
        history = json.loads((folder / "history.json").read_text())
        epochs, config = history["epochs"], history["config"]
        assert epochs and isinstance(config, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        say(f"note: {folder} is no run folder with a finished epoch (no readable history.json); left out")
        return None
    if history.get("format_version") != FORMAT_VERSION:
        say(f"note: {folder}: {_other_version(history.get('format_version'))}; left out")
        return None
    last = None
    with contextlib.suppress(UserError):
        last = Checkpoint.load(folder / "last.pt")
    done = last is not None and last.training_state is not None and run_finished(last)
    of = f"/{config['epochs']}" if config.get("epochs") else ""
    status = f"{len(epochs)}{of}" + ("" if done else " unfinished")
    places = [f"{e['device']} {e['precision']}" for e in epochs]
    device = " → ".join(p for i, p in enumerate(places) if i == 0 or p != places[i - 1])
    try:
        test = tested_accuracy(json.loads((folder / "best_test.json").read_text()), history)
    except (OSError, ValueError, KeyError, TypeError):
        test = "-"
    return {"folder": folder, "config": config, "epochs": epochs, "best": history["best"], "status": status, "device": device, "test": test}


def tested_accuracy(result: dict, history: dict) -> str:
    """The test accuracy `evaluate` recorded for a run's best.pt, said with what it was measured on."""
    said = f"{100 * result['accuracy']:.2f}%"
    if result.get("test") != history.get("data", {}).get("test"):
        return said + " (other test data)"
    return said if result.get("epoch") == history["best"]["epoch"] else said + f" (epoch {result.get('epoch')})"


def differing_settings(configs: list[dict]) -> list[str]:
    """For each run, its settings that not all the runs share, as name=value (where it runs and its folder left out)."""
    flat = [flatten_settings(c) for c in configs]
    names = sorted({n for f in flat for n in f} - {"out", *WHERE_IT_RUNS})
    differ = [n for n in names if len({repr(f.get(n)) for f in flat}) > 1]
    return [", ".join(f"{n}={f.get(n)}" for n in differ) for f in flat]


def flatten_settings(config: dict, prefix: str = "") -> dict:
    """A saved config as name=value pairs, a nested one as augmentation.name (a path as its last part)."""
    flat = {}
    for name, value in config.items():
        if isinstance(value, dict):
            flat |= flatten_settings(value, f"{prefix}{name}.")
        else:
            flat[prefix + name] = Path(value).name if isinstance(value, str) and ("/" in value or "\\" in value) else value
    return flat


def plot_comparison(runs: list[dict], labels: list[str], path: Path) -> None:
    """Validation accuracy and training loss per epoch of each run, in one PNG (unfinished runs dashed)."""
    plt = _pyplot()
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for run, label in zip(runs, labels):
        epochs = [e["epoch"] for e in run["epochs"]]
        unfinished = "unfinished" in run["status"]
        style, label = ("o--", f"{label} (unfinished)") if unfinished else ("o-", label)
        line = acc.plot(epochs, [100 * e["val_accuracy"] for e in run["epochs"]], style, ms=3, label=label)[0]
        loss.plot(epochs, [e["train_loss"] for e in run["epochs"]], style, ms=3, color=line.get_color())
    acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy")
    loss.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="training loss")
    for ax in (acc, loss):
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.legend(loc="lower center", ncol=min(len(runs), 2), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 * math.ceil(len(runs) / 2), 1, 1))
    save_figure(fig, path)


@takes_train_flags(
    "dataset data_dir model model_args batch_size seed device precision weight_decay label_smoothing augment augment_degrees"
)
def lr_find(start_lr: float = 1e-5, end_lr: float = 1.0, steps: int = 200, plot: str | None = None, **flags) -> None:
    """A learning-rate range test: from fresh weights the learning rate rises step by step until the loss blows up; plots it, suggests a --lr.

    The data, model, augmentation and step are those `train` uses with the same flags.

    Args:
        start_lr: the first step's learning rate
        end_lr: the last step's, if the loss has not blown up before
        steps: training steps, each at a higher learning rate
        plot: where to write the PNG (default: checkpoints/lr_find-<name from the flags given>.png)
    """
    _check_float("start_lr", start_lr, 0)
    _check_float("end_lr", end_lr, start_lr)
    _check_int("steps", steps, 10)
    if Ranks.launched().world > 1:
        raise UsageError("lr_find runs in one process: start it with python, not torchrun (the --lr it finds suits both)")
    config = TrainConfig(**flags).resolved()
    path = Path(str(plot)) if plot else Path("checkpoints") / f"lr_find-{run_name(flags)}.png"
    check_writable(path.parent)  # before any data is read
    user = named_model(config.model)
    data = load_data(config.dataset, config.data_dir)
    if len(data.train_images) < 3:
        raise UserError(f"{data.source}: only {len(data.train_images)} training image(s); the test needs a few batches of them")
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    if user is not None:
        check_model(user, config.model_args or {}, data.train_images[:2], len(data.classes))
    (x_train, y_train, turns), _, model_config = split_for_training(data, config, device, model_of(config, user))
    state = TrainingState(config, model_config, device, Ranks(), user)
    lrs, losses = lr_sweep(
        state, config, (x_train, y_train, turns), [start_lr * (end_lr / start_lr) ** (i / (steps - 1)) for i in range(steps)]
    )
    suggested = suggest_lr(lrs, losses)
    plot_lr_find(lrs, losses, suggested, config, path)
    if suggested is None:
        raise UserError(f"the loss never fell between --start_lr={start_lr:g} and {lrs[-1]:.2g}; try a lower --start_lr (plot: {path})")
    say(f"plot: {path}")
    print(f"suggested --lr={suggested:.2g} (the default for {config.dataset} is {DATASETS[config.dataset].lr:g})")


def lr_sweep(state: TrainingState, config: TrainConfig, train: tuple, lrs: list[float]) -> tuple[list[float], list[float]]:
    """A step at each learning rate in turn on fresh batches: the rates tried and smoothed losses, until 4× the lowest."""
    x_train = train[0]
    state.net.train()
    order, smooth, lowest, losses = torch.empty(0, dtype=torch.long), 0.0, math.inf, []
    for i, lr in enumerate(tqdm(lrs, desc="lr_find", leave=False)):
        if len(order) < min(config.batch_size, len(x_train)):  # a fresh pass over the images
            order = torch.randperm(len(x_train), generator=state.generator, device=state.generator.device)
        batch, order = order[: config.batch_size], order[config.batch_size :]
        x, y = training_batches(state, config, train, batch, [(0, len(batch))], Ranks())[0]
        loss = float(train_step(state, config, x, y, lr))
        smooth = 0.9 * smooth + 0.1 * loss
        losses.append(smooth / (1 - 0.9 ** (i + 1)))  # the moving average without its bias towards 0
        lowest = min(lowest, losses[-1])
        if not math.isfinite(loss) or losses[-1] > 4 * lowest:
            break
    return lrs[: len(losses)], losses


def suggest_lr(lrs: list[float], losses: list[float]) -> float | None:
    """A tenth of the learning rate at the lowest smoothed loss (Smith 2017, fastai); None where the loss never fell."""
    lowest = min(range(len(losses)), key=losses.__getitem__)
    return lrs[lowest] / 10 if lowest and losses[lowest] < losses[0] else None


def plot_lr_find(lrs: list[float], losses: list[float], suggested: float | None, config: TrainConfig, path: Path) -> None:
    """The smoothed loss against the learning rate (log scale), the suggestion and the dataset's default marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(lrs, losses, color="tab:blue", label="training loss (smoothed)")
    if suggested is not None:
        ax.axvline(suggested, color="tab:green", ls="--", label=f"suggested --lr={suggested:.2g}")
    ax.axvline(DATASETS[config.dataset].lr, color="tab:gray", ls=":", label=f"default --lr={DATASETS[config.dataset].lr:g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title=f"lr_find: {config.dataset}, batch {config.batch_size}")
    finite = [v for v in losses if math.isfinite(v)] or [1.0]
    ax.set_ylim(top=min(max(finite), 2.5 * finite[0]))  # the blow-up's last steps would flatten the rest
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------- inspection: show, mc_dropout, knn, predict


def _imshow(ax, image: Tensor) -> None:
    """Show one [C, H, W] image in [0, 1]: grey for one channel, colour for three."""
    pixels = image.permute(1, 2, 0).clamp(0, 1).numpy()
    ax.imshow(pixels[..., 0] if pixels.shape[2] == 1 else pixels, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def _inspect_data(dataset: str | None, data_dir: str | None, ckpt: Checkpoint | None, train: bool = True) -> tuple[str, Data]:
    """The dataset an inspection command works on: --dataset, else the checkpoint's, else corruptedmnist."""
    if dataset is None:
        dataset = ckpt.train_config.dataset if ckpt else DEFAULT_DATASET
    return str(dataset), load_data(str(dataset), data_dir, train=train)


def show(
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "train",
    n: int = 25,
    out: str | None = None,
    checkpoint: str | None = None,
    wrong: bool = False,
    model: str | None = None,
) -> None:
    """Save a grid of the first n images of a split with their labels; with --checkpoint, predictions too (wrong ones in red).

    Args:
        dataset: which data (default: the checkpoint's, else corruptedmnist)
        data_dir: folder holding it
        split: train or test
        n: how many images
        out: PNG to write (default: <dataset>_<split>_grid.png)
        checkpoint: a best.pt whose predictions to show beside the labels
        wrong: show only images the checkpoint gets wrong (the first n of them)
        model: your model file, PATH.py:Class, where the checkpoint holds one (imported only when named here)
    """
    _check_choice("split", split, ("train", "test"))
    _check_int("n", n, 1)
    if _check_bool("wrong", wrong) and checkpoint is None:
        raise UsageError("--wrong needs --checkpoint=RUN/best.pt: it shows the images that checkpoint gets wrong")
    ckpt = Checkpoint.load(checkpoint) if checkpoint is not None else None
    check_writable(Path(str(out)).parent if out else Path())  # before any data is read
    dataset, data = _inspect_data(dataset, data_dir, ckpt, train=split == "train")
    images, labels = (data.train_images, data.train_labels) if split == "train" else (data.test_images, data.test_labels)
    if not wrong:
        images, labels = images[:n], labels[:n]
    predictions = None
    if ckpt is not None:
        predictions = predict_logits(ckpt.model(model), images, torch.device("cpu")).argmax(1)
    if wrong:
        missed = (predictions != labels).nonzero().flatten()[:n]
        images, labels, predictions = images[missed], labels[missed], predictions[missed]
    if not len(images):
        print(f"{checkpoint} gets every {split} image right: nothing to show")
        return
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows), dpi=80, squeeze=False)
    for ax in axes.flat[len(images) :]:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[: len(images)]):
        _imshow(ax, images[i])
        title, colour = data.classes[labels[i]], "black"
        if predictions is not None:
            title = f"{title} → {data.classes[predictions[i]]}"
            colour = "black" if predictions[i] == labels[i] else "red"
        ax.set_title(title, fontsize=7, color=colour)
    which = f"first {len(images)} misclassified images" if wrong else f"first {len(images)} images"
    fig.suptitle(f"{dataset} {split}: {which}" + (" (label → prediction)" if predictions is not None else ""), fontsize=9)
    fig.tight_layout()
    path = save_figure(fig, Path(str(out or f"{dataset}_{split}_grid.png")))
    wrong = "" if predictions is None else f", {int((predictions != labels).sum())} wrong"
    print(f"wrote {path} ({len(images)} images{wrong})")


def enable_mc_dropout(model: nn.Module) -> int:
    """Put only the dropout layers in training mode (batch norm keeps its running statistics); returns how many."""
    model.eval()
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout) and m.p > 0]
    for m in dropouts:
        m.train()
    return len(dropouts)


def mc_dropout(
    checkpoint: str,
    index: int = 0,
    samples: int = 100,
    dataset: str | None = None,
    data_dir: str | None = None,
    out: str | None = None,
    seed: int = 0,
    model: str | None = None,
) -> None:
    """Monte-Carlo dropout on one test image: `samples` stochastic passes in one batch, a histogram and the predictive entropy.

    Args:
        checkpoint: best.pt written by `train`
        index: which test image
        samples: stochastic forward passes
        dataset: which data (default: the checkpoint's)
        data_dir: folder holding it
        out: PNG to write (default: mc_dropout_<index>.png beside the checkpoint)
        seed: seeds the dropout masks
        model: your model file, PATH.py:Class, where the checkpoint holds one (imported only when named here)
    """
    _check_int("index", index, 0)
    _check_int("samples", samples, 1)
    _check_int("seed", seed, 0)
    ckpt = Checkpoint.load(checkpoint)
    net = ckpt.model(model)
    if not enable_mc_dropout(net):
        raise UserError(f"{checkpoint}: the model has no dropout layer, so Monte-Carlo dropout has nothing to sample")
    check_writable(Path(str(out)).parent if out else Path(str(checkpoint)).parent)  # before any data is read
    dataset, data = _inspect_data(dataset, data_dir, ckpt, train=False)
    if index >= len(data.test_images):
        raise UsageError(f"--index must be below {len(data.test_images)}, the size of the {dataset} test split; got {index}")
    torch.manual_seed(seed)
    image, label = data.test_images[index], int(data.test_labels[index])
    with torch.no_grad():  # each copy in the batch gets its own dropout mask
        probs = torch.cat([net(image.expand(min(1000, samples - i), *image.shape)).softmax(1) for i in range(0, samples, 1000)])
    classes = ckpt.classes
    counts = torch.bincount(probs.argmax(1), minlength=len(classes))
    mean = probs.mean(0)
    entropy = float(-(mean * mean.clamp_min(1e-12).log()).sum())
    top = int(mean.argmax())
    plt = _pyplot()
    fig, (ax_img, ax_hist, ax_mean) = plt.subplots(1, 3, figsize=(11, 3.2), dpi=90, gridspec_kw={"width_ratios": [1, 2, 2]})
    _imshow(ax_img, image)
    ax_img.set_title(f"test #{index}, label {classes[label]}", fontsize=9)
    ax_hist.bar(range(len(classes)), counts.numpy(), color="tab:blue")
    ax_hist.set_title(f"predicted class in {samples} dropout passes", fontsize=9)
    ax_mean.bar(range(len(classes)), mean.numpy(), color="tab:orange")
    ax_mean.set_title(f"mean softmax; predictive entropy {entropy:.3f} nats", fontsize=9)
    for ax in (ax_hist, ax_mean):
        ax.set_xticks(range(len(classes)), classes, rotation=45 if len(max(classes, key=len)) > 2 else 0, fontsize=8)
    fig.tight_layout()
    path = save_figure(fig, Path(str(out or Path(str(checkpoint)).with_name(f"mc_dropout_{index}.png"))))
    print(
        f"test image {index} (label {classes[label]}): {classes[top]} with mean p={float(mean[top]):.3f}, "
        f"chosen in {int(counts[top])}/{samples} passes; predictive entropy {entropy:.3f} nats; plot: {path}"
    )


def pairwise_sq_dist(a: Tensor, b: Tensor, chunk: int = 1024) -> Tensor:
    """Squared Euclidean distances [N, M] between rows of a [N, d] and b [M, d] as |a|² + |b|² - 2<a, b>, in row chunks."""
    b_sq = (b * b).sum(1)
    out = torch.empty(len(a), len(b), dtype=torch.result_type(a, b))
    for i in range(0, len(a), chunk):
        rows = a[i : i + chunk]
        out[i : i + chunk] = ((rows * rows).sum(1, keepdim=True) + b_sq - 2 * rows @ b.T).clamp_min_(0)
    return out


def knn_predict(train_x: Tensor, train_y: Tensor, test_x: Tensor, k: int, num_classes: int, chunk: int = 500) -> Tensor:
    """k-nearest-neighbour majority vote (ties to the nearer class) with only a chunk × train distance block in memory."""
    predictions = []
    for i in tqdm(range(0, len(test_x), chunk), desc=f"{k}-NN", leave=False):
        dist = pairwise_sq_dist(test_x[i : i + chunk], train_x)
        nearest = dist.topk(k, dim=1, largest=False).indices  # sorted, nearest first
        votes = F.one_hot(train_y[nearest], num_classes).float()
        votes += torch.linspace(1e-3, 0, k)[None, :, None] * votes  # a tie goes to the class of the nearer neighbour
        predictions.append(votes.sum(1).argmax(1))
    return torch.cat(predictions)


def knn(k: int = 3, dataset: str = DEFAULT_DATASET, data_dir: str | None = None, chunk: int = 500) -> None:
    """Pixel-space k-nearest-neighbour baseline: test accuracy without any learning, to compare with the CNN.

    Args:
        k: neighbours that vote
        dataset: which data
        data_dir: folder holding it
        chunk: test images per distance block (bounds the memory)
    """
    _check_int("k", k, 1)
    _check_int("chunk", chunk, 1)
    data = load_data(dataset, data_dir)
    if k > len(data.train_images):
        raise UsageError(f"--k must be at most the {len(data.train_images)} training images; got {k}")
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    started = time.perf_counter()
    predictions = knn_predict(flat(data.train_images), data.train_labels, flat(data.test_images), k, len(data.classes), chunk)
    correct, total = int((predictions == data.test_labels).sum()), len(data.test_labels)
    print(f"{k}-NN (pixel space) test accuracy: {100 * correct / total:.2f}% ({correct}/{total}) in {time.perf_counter() - started:.1f}s")


def load_picture(path: Path, shape: tuple[int, int, int]) -> Tensor:
    """A user's picture as the model's input: for digits and clothes prepared as MNIST was, else resized."""
    import matplotlib.image

    try:
        pixels = np.asarray(matplotlib.image.imread(path), dtype=np.float32)
    except Exception as exc:  # Pillow and matplotlib raise many kinds for a file that is not a picture
        raise UserError(f"{path}: not a readable image ({first_line(exc)}); give PNG or JPEG files") from exc
    if pixels.ndim not in (2, 3) or min(pixels.shape[:2]) < 2:
        raise UserError(f"{path}: not a picture (array of shape {list(pixels.shape)})")
    if pixels.max() > 1:  # JPEGs come as 0..255
        pixels = pixels / 255
    if pixels.ndim == 3 and pixels.shape[2] == 4:  # composite transparency onto white
        pixels = pixels[..., :3] * pixels[..., 3:] + (1 - pixels[..., 3:])
    image = torch.from_numpy(pixels if pixels.ndim == 3 else pixels[..., None]).permute(2, 0, 1)
    c, h, w = shape
    if c == 3:
        rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
        return F.interpolate(rgb[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    return mnist_style(image[:3].mean(0) if image.shape[0] >= 3 else image[0], h)


def mnist_style(gray: Tensor, side: int = 28) -> Tensor:
    """Light-on-dark, cropped to the ink, scaled into a 20×20 box and centred by mass in side×side, as MNIST was made."""
    border = torch.cat([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = 1 - gray if border.mean() > 0.5 else gray.clone()
    ink = (ink - ink.min()).clamp_min(0)
    ink = ink / ink.max().clamp_min(1e-6)
    rows, cols = torch.nonzero(ink > 0.2, as_tuple=True)
    if len(rows) == 0:
        return torch.zeros(1, side, side)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    box = round(side * 20 / 28)
    scale = box / max(ink.shape)
    size = (max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale)))
    small = F.interpolate(ink[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0].clamp(0, 1)
    total = small.sum().clamp_min(1e-6)
    cy = float((small.sum(1) * torch.arange(size[0])).sum() / total)
    cx = float((small.sum(0) * torch.arange(size[1])).sum() / total)
    top = min(max(round(side / 2 - 0.5 - cy), 0), side - size[0])
    left = min(max(round(side / 2 - 0.5 - cx), 0), side - size[1])
    canvas = torch.zeros(side, side)
    canvas[top : top + size[0], left : left + size[1]] = small
    return canvas[None]


def predict(checkpoint: str, *images: str, model: str | None = None) -> None:
    """Classify picture files (PNG/JPEG): one line per file with the top-3 classes and their probabilities.

    Args:
        checkpoint: best.pt written by `train`
        images: picture files; digits and clothes are prepared as MNIST was (light on dark, centred by mass)
        model: your model file, PATH.py:Class, where the checkpoint holds one (imported only when named here)
    """
    if not images:
        raise UsageError("predict needs picture files: python fashion_trainer.py predict CHECKPOINT digit.png [more.png …]")
    ckpt = Checkpoint.load(checkpoint)
    net = ckpt.model(model)
    shape = ckpt.model_config.input_shape
    batch = []
    for name in images:
        path = Path(str(name)).expanduser()
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        batch.append(load_picture(path, shape))
    probs = predict_logits(net, torch.stack(batch), torch.device("cpu")).softmax(1)
    classes = ckpt.classes
    for name, p in zip(images, probs):
        top = p.topk(min(3, len(classes)))
        print(f"{name}: " + ", ".join(f"{classes[i]} {100 * float(v):.1f}%" for v, i in zip(top.values, top.indices)))


# ----------------------------------------------------------------------------- your model: the class of a model file the user names, checked


@dataclass(frozen=True)
class UserModel:
    """A model class from a file the user named on the command line (--model): imported then, and only then."""

    spec: str  # PATH.py:Class
    cls: type
    sha256: str  # of the file's text

    def build(self, kwargs: dict) -> nn.Module:
        """An instance built with its keyword arguments; a constructor that needs others, or fails, is one line."""
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        params = inspect.signature(self.cls).parameters.values()
        missing = [p.name for p in params if p.default is p.empty and p.kind in named and p.name not in kwargs]
        if missing:
            example = json.dumps(kwargs | dict.fromkeys(missing, 0))
            raise UsageError(f"--model: {self.cls.__name__}() needs {', '.join(missing)}: give --model_args='{example}'")
        try:
            return self.cls(**kwargs)
        except Exception as exc:
            raise UsageError(f"--model: {self.cls.__name__}(**{kwargs}) failed: {type(exc).__name__}: {first_line(exc)}") from exc


def import_model(spec: str) -> UserModel:
    """The class --model names (PATH.py:Class, or the one nn.Module class of PATH.py), imported; each mistake one line."""
    path_text, _, name = spec.rpartition(":") if re.search(r"\.py:\w+$", spec) else (spec, "", "")
    path = Path(path_text).expanduser()
    if path.suffix != ".py" or not path.is_file():
        raise UsageError(
            f"--model={spec}: {path} is no Python file here; name your model as PATH.py:ClassName, e.g. --model=model.py:MyAwesomeModel"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    module_name = f"_your_model_{digest[:16]}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(module_name, path))
    sys.modules[module_name], sys.path[:0] = module, [str(path.resolve().parent)]
    try:
        module.__spec__.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        raise UsageError(f"--model: importing {path} failed: {type(exc).__name__}: {first_line(exc)}") from exc
    models = [n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == module_name]
    found = f"it defines {', '.join(models) or 'no nn.Module class'}"
    if not name and len(models) != 1:
        raise UsageError(
            f"--model={spec}: name the class, e.g. --model={path_text}:{models[0]}; {found}" if models else f"--model={spec}: {found}"
        )
    cls = vars(module).get(name or models[0])
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        what = "missing" if cls is None else f"not an nn.Module class but {cls!r:.60}"
        raise UsageError(f"--model={spec}: {name} in {path} is {what}; {found}")
    return UserModel(f"{path_text}:{cls.__name__}", cls, digest)


def named_model(spec: str | None, checkpoint: Checkpoint | None = None) -> UserModel | None:
    """The model class a command's --model names (None where it names none), checked against a checkpoint's model."""
    saved = checkpoint and checkpoint.model_config
    if spec is None and saved is not None and saved.user_model:
        raise ModelNotNamed(checkpoint.path, saved.user_model)
    if spec is None:
        return None
    if saved is not None and not saved.user_model:
        raise UsageError(f"--model={spec}: this run's model is the built-in CNN, not a file of yours; leave --model out")
    user = import_model(str(spec))
    if saved is not None and user.spec.rpartition(":")[2] != saved.user_model.rpartition(":")[2]:
        raise UsageError(f"--model={spec}: names {user.cls.__name__}, but the run's model is {saved.user_model}")
    if saved is not None and user.sha256 != saved.user_sha256:
        say(f"warning: {user.spec.rpartition(':')[0]} has changed since the run was saved; its weights go into the class as it is now")
    return user


def check_model(user: UserModel, kwargs: dict, images: Tensor, num_classes: int) -> None:
    """Build the user's model and run it on a real batch before any step: it must return the class scores [N, classes]."""
    model = user.build(kwargs).eval()
    with torch.no_grad():
        try:
            out = model(images)
        except Exception as exc:
            raise UsageError(
                f"--model: {user.spec} failed on a batch of images shaped {list(images.shape)} (floats in 0..1): {type(exc).__name__}: "
                f"{first_line(exc)}"
            ) from exc
    if not isinstance(out, Tensor) or not out.is_floating_point() or tuple(out.shape) != (len(images), num_classes):
        got = f"{out.dtype} {list(out.shape)}" if isinstance(out, Tensor) else f"a {type(out).__name__}"
        raise UsageError(
            f"--model: {user.spec} returned {got} for {len(images)} images; it must return their class scores, [{len(images)}, "
            f"{num_classes}] floats (logits or log-probabilities)"
        )


# ----------------------------------------------------------------------------- notebook helpers: a step in a child process, a picture redrawn, the runtime


def run_step(*args: str, image: str | Path | None = None) -> None:
    """For the notebook: run `python fashion_trainer.py ARGS` in a child process, stream its output into the cell, stop Run
    all with one line if it fails (a failing `!` line would not), and show `image` redrawn whenever the child rewrites it."""
    child = subprocess.Popen([sys.executable, str(ROOT / "fashion_trainer.py"), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    shown = (None, None)
    while chunk := child.stdout.read1(1 << 16):
        sys.stdout.write(chunk.decode("utf-8", "replace"))  # progress bars' \r kept: the notebook redraws them in place
        sys.stdout.flush()
        shown = show_if_changed(image, *shown)
    status = child.wait()
    show_if_changed(image, *shown)
    if status:
        why = f"was killed (signal {-status}); Run all again continues it" if status < 0 else f"failed with exit status {status}, see above"
        raise SystemExit(f"stopped: `{args[0]}` {why}. The cells below did not run.")


def show_if_changed(path: str | Path | None, shown: int | None, handle: object) -> tuple[int | None, object]:
    """Show the PNG at `path` in the cell, or redraw it when its modification time moved; returns (that time, the handle)."""
    try:
        from IPython.display import Image, display

        stamp = os.stat(path).st_mtime_ns
    except (ImportError, OSError, TypeError):  # no notebook, no image yet, or none asked for
        return shown, handle
    if stamp != shown:
        picture = Image(filename=str(path))
        if handle is None:
            handle = display(picture, display_id=True)
        else:
            handle.update(picture)
    return stamp, handle


def setup_report(commit: str, folder: str | Path = ".") -> str:
    """For the notebook: the code's commit, torch and CUDA, the GPU (or a warning), the precision train picks, the free space."""
    device = pick_device("auto")
    lines = [f"code: {commit or '(not a git clone)'}; torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}"]
    if device.type == "cuda":
        gpu = torch.cuda.get_device_properties(device)
        lines.append(f"GPU: {gpu.name}, {gpu.total_memory / 2**30:.1f} GiB")
    else:
        lines.append(
            "WARNING: this runtime has no GPU, so training runs on its CPU: a default corrupted-MNIST run takes minutes (README, "
            "Results), CIFAR-10 far longer. For a GPU: Runtime > Change runtime type > T4 GPU > Save, then Run all again (the "
            "data and checkpoints on Drive stay; an unfinished run continues)."
        )
    said = {"bf16": "bf16 autocast", "fp16": "fp16 autocast with a gradient scaler", "fp32": "fp32"}
    lines.append(f"precision: {said[precision_name(autocast_dtype(device, 'auto'))]} (train's --precision=auto here)")
    free = shutil.disk_usage(folder).free / 2**30
    low = " (WARNING: little room for checkpoints; free some space on Drive)" if free < 0.5 else ""
    return "\n".join([*lines, f"free space in {Path(folder).resolve()}: {free:.1f} GiB{low}"])


COMMANDS = {command.__name__: command for command in (train, evaluate, prepare, show, mc_dropout, knn, predict, compare, lr_find)}


if __name__ == "__main__":
    sys.exit(main())
