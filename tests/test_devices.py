"""GPUs and Macs, simulated on the CPU: precision by capability, resuming across devices, the device policy, DDP, tiny batches.

Tests marked `cuda` run only where a CUDA GPU is visible (benchmarks/gpu_check.sh runs them); they skip cleanly elsewhere."""

import dataclasses
import json
import os
import socket

import pytest
import torch
from conftest import assert_one_line_error, ctrl_c_at_step, ft, write_course_npz


def cuda(test):
    """Mark a test for CUDA (`pytest -m cuda`, run by benchmarks/gpu_check.sh); it skips where no GPU is visible."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")


@pytest.mark.parametrize(
    ("capability", "hip", "arch", "expected"),
    [
        ((7, 5), None, "", torch.float16),  # T4
        ((8, 0), None, "", torch.bfloat16),
        ((9, 0), None, "", torch.bfloat16),
        ((9, 4), "6.2", "gfx942:sramecc+:xnack-", torch.bfloat16),  # MI300
        ((9, 0), "6.2", "gfx90a:sramecc+:xnack-", torch.bfloat16),  # MI250
        ((11, 0), "6.2", "gfx1100", torch.bfloat16),  # RDNA3
        ((9, 0), "6.2", "gfx906:sramecc+:xnack-", torch.float16),  # MI50: bf16 only emulated
        ((10, 3), "6.2", "gfx1030", torch.float16),  # RDNA2
    ],
)
def test_auto_precision_on_cuda_follows_compute_capability_not_bf16_emulation(monkeypatch, capability, hip, arch, expected):
    class Properties:
        gcnArchName = arch

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: Properties)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # true on a T4 too
    monkeypatch.setattr(torch.version, "hip", hip)
    assert ft.autocast_dtype(CUDA, "auto") == expected
    assert ft.autocast_dtype(CUDA, "fp32") is None and ft.autocast_dtype(CUDA, "fp16") == torch.float16


def test_macs_train_in_fp32_unless_asked():
    mps = torch.device("mps")
    assert ft.autocast_dtype(mps, "auto") is None and ft.autocast_dtype(mps, "fp16") == torch.float16


def test_device_policy_by_device_type():
    cuda_use, mps_use, cpu_use = (ft.DeviceUse.of(torch.device(name)) for name in ("cuda", "mps", "cpu"))
    assert cuda_use == ft.DeviceUse(data_on_device=True, random_on_device=True, non_blocking=True, channels_last=True, fused_adamw=True)
    assert mps_use.data_on_device and not mps_use.non_blocking and not mps_use.channels_last and not mps_use.random_on_device
    assert not cpu_use.data_on_device and not cpu_use.non_blocking and cpu_use.channels_last


def test_an_fp32_run_builds_no_autocast_context(cli, tiny_data, monkeypatch):
    built = []
    real = torch.autocast
    monkeypatch.setattr(torch, "autocast", lambda *a, **k: built.append((a, k)) or real(*a, **k))
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=1", "--precision=fp32")
    assert code == 0, err
    assert built == []
    assert cli("train", f"--data_dir={tiny_data}", "--out=run2", "--epochs=1", "--precision=bf16")[0] == 0
    assert built and all(k.get("dtype") == torch.bfloat16 for _, k in built)


def _interrupted_run(cli, tiny_data, monkeypatch, *flags: str) -> None:
    """A run in folder `cut` stopped by Ctrl-C in epoch 2 of 3 (last.pt holds epoch 1)."""
    real = ctrl_c_at_step(monkeypatch, 8)  # 6 steps an epoch
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=cut", "--epochs=3", "--batch_size=32", *flags)
    assert code == 130, err
    monkeypatch.setattr(ft, "update_ema", real)


def test_a_gpu_run_resumes_on_a_laptop(cli, tiny_data, tmp_path, monkeypatch):
    _interrupted_run(cli, tiny_data, monkeypatch)
    path = tmp_path / "cut" / "last.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["train_config"] |= {"device": "cuda", "precision": "fp16"}  # as written by a Colab T4
    ckpt["training_state"]["device"] = "cuda"
    torch.save(ckpt, path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out, err = cli("train", "--resume=cut")
    assert code == 0, err
    assert "--device=cuda, which is not available here" in err and "--precision=fp16, which needs a GPU" in err
    assert "trained on cuda so far and goes on on cpu" in err and out.startswith("best checkpoint:")
    assert torch.load(path, weights_only=True)["train_config"]["device"] == "auto"


def test_device_and_precision_on_a_resume_command_override_the_saved_ones(cli, tiny_data, tmp_path, monkeypatch):
    _interrupted_run(cli, tiny_data, monkeypatch, "--precision=bf16")
    code, _, err = cli("train", "--resume=cut", "--device=cpu", "--precision=fp32")
    assert code == 0, err
    config = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["train_config"]
    assert config["device"] == "cpu" and config["precision"] == "fp32"
    code, _, err = cli("train", "--resume=cut", "--lr=1")
    assert_one_line_error(code, err, "--lr cannot change when resuming", exit_code=2)


def test_a_last_batch_of_one_image_never_reaches_batch_norm(cli, tmp_path):
    data = write_course_npz(tmp_path / "d", n_train=200, n_test=20)  # 190 training images after validation
    code, _, err = cli("train", f"--data_dir={data}", "--out=run", "--epochs=1", "--batch_size=63", "--val_fraction=0.05")
    assert code == 0, err  # 190 = 3 × 63 + 1: the lone image joins the batch before it
    assert ft.batch_starts(190, 63) == [0, 63, 126] and ft.batch_starts(190, 32) == [0, 32, 64, 96, 128, 160]
    assert ft.batch_starts(10, 4, world=2) == [0, 4] and ft.batch_starts(12, 4, world=2) == [0, 4, 8]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["steps"]) == 3


def test_ddp_broadcasts_no_filter_index_buffers(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = ft.build_model(
            dataclasses.replace(
                ft.DATASETS["corruptedmnist"].model_config, input_shape=(1, 28, 28), num_classes=10, mean=(0.1,), std=(0.3,)
            )
        )
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        broadcast = list(model.buffers())
        assert broadcast and all(b.dtype != torch.int64 or b.numel() == 1 for b in broadcast)  # BN counters only
        assert ddp(torch.rand(4, 1, 28, 28)).shape == (4, 10)
        assert all(isinstance(m.index, torch.Tensor) for m in model.modules() if isinstance(m, ft.P4Conv))
    finally:
        torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------- on a real GPU only (benchmarks/gpu_check.sh)


@cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_amp_training_learns(cli, tmp_path, precision):
    if precision == "bf16" and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("bf16 needs compute capability 8.0")
    data = write_course_npz(tmp_path / "d", n_train=600, n_test=100, shards=3)
    code, out, err = cli("train", f"--data_dir={data}", "--out=run", "--epochs=4", "--device=cuda", f"--precision={precision}")
    assert code == 0, err
    assert float(out.split("validation accuracy ")[1].split("%")[0]) > 80
    scaler = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["training_state"]["scaler"]
    assert (scaler["_growth_tracker"] > 0) if precision == "fp16" else scaler == {}  # fp16's scaler stepped, unskipped


@cuda
def test_cuda_epoch_has_no_host_device_synchronisation(tmp_path):
    data = ft.read_corrupted_mnist(write_course_npz(tmp_path / "d", n_train=400, n_test=20))
    config = ft.TrainConfig(epochs=1, device="cuda").resolved()
    x, y = data.train_images.to(CUDA), data.train_labels.to(CUDA)
    model_config = dataclasses.replace(
        ft.DATASETS["corruptedmnist"].model_config, input_shape=(1, 28, 28), num_classes=10, mean=(0.1,), std=(0.3,)
    )
    state = ft.TrainingState(config, model_config, CUDA, ft.Ranks())
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses, _ = ft.train_epoch(state, config, x, y, ft.Ranks(), lambda i: i / 100)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(losses).all()


@cuda
def test_cuda_compile_trains_compiling_once(cli, tiny_data, monkeypatch):
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)  # the merged last batch (62 of 190) runs eager
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=run", "--epochs=2", "--device=cuda", "--compile")
    assert code == 0, err
    assert "start: " in err  # the compiling, measured and said apart


@cuda
def test_cuda_compiled_step_matches_the_eager_one():
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28, device=CUDA), torch.randint(0, 10, (64,), device=CUDA)
    model_config = dataclasses.replace(
        ft.DATASETS["corruptedmnist"].model_config, input_shape=(1, 28, 28), num_classes=10, mean=(0.1,), std=(0.3,)
    )
    losses, grads = [], []
    for compile in (False, True):
        torch.manual_seed(0)
        config = ft.TrainConfig(batch_size=64, device="cuda", precision="fp32", compile=compile).resolved()
        state = ft.TrainingState(config, model_config, CUDA, ft.Ranks())
        state.model.eval()  # no dropout: the same function
        losses.append(float(ft.train_step(state, config, x.contiguous(memory_format=state.memory_format), y, 1e-3)))
        grads.append(torch.cat([p.grad.flatten() for p in state.model.parameters()]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert float((grads[0] - grads[1]).norm() / grads[0].norm()) < 1e-3  # the same gradients, to float rounding


@cuda
def test_cuda_evaluate_and_lr_find_run_on_the_gpu(cli, tmp_path):
    data = write_course_npz(tmp_path / "d", n_train=600, n_test=100, shards=3)
    code, _, err = cli("train", f"--data_dir={data}", "--out=run", "--epochs=3", "--device=cuda")
    assert code == 0, err
    code, out, err = cli("evaluate", "run/best.pt", f"--data_dir={data}", "--device=cuda")
    assert code == 0, err
    assert float(out.split("Test accuracy: ")[1].split("%")[0]) > 60
    code, out, err = cli("lr_find", f"--data_dir={data}", "--device=cuda", "--batch_size=32", "--steps=40", "--start_lr=1e-4")
    assert code == 0, err
    assert out.startswith("suggested --lr=")


@cuda
def test_cuda_run_continues_on_the_cpu_from_its_real_cuda_tensors(cli, tiny_data, tmp_path, monkeypatch):
    real = ctrl_c_at_step(monkeypatch, 8)  # 6 steps an epoch: stopped in epoch 2
    code, _, err = cli("train", f"--data_dir={tiny_data}", "--out=cut", "--epochs=3", "--batch_size=32", "--precision=fp16")
    assert code == 130, err
    monkeypatch.setattr(ft, "update_ema", real)
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["training_state"]
    assert saved["device"] == "cuda" and saved["optimizer"]["param_groups"][0]["fused"] and saved["scaler"]
    code, out, err = cli("train", "--resume=cut", "--device=cpu")
    assert code == 0, err
    assert "trained on cuda so far and goes on on cpu" in err and "--precision=fp16, which needs a GPU" in err
    after = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["training_state"]
    assert after["device"] == "cpu" and after["epoch"] == 3
    assert all(s["step"].device.type == "cpu" for s in after["optimizer"]["state"].values())
    code, out, err = cli("evaluate", "cut/best.pt", f"--data_dir={tiny_data}", "--device=cpu")
    assert code == 0 and "Test accuracy:" in out, err


@cuda
def test_cuda_torchrun_one_process_trains_on_its_local_gpu(tmp_path):
    import subprocess
    import sys

    data = write_course_npz(tmp_path / "d", n_train=200, n_test=20)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", str(ft.ROOT / "fashion_trainer.py"), "train"]
    result = subprocess.run(
        [*cmd, f"--data_dir={data}", f"--out={tmp_path / 'run'}", "--epochs=1", "--device=cuda"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "on cuda:0" in result.stderr and (tmp_path / "run" / "best.pt").is_file()
