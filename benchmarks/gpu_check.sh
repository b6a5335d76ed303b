#!/usr/bin/env bash
# One GPU check in under 8 minutes: the CUDA tests, then the default corrupted-MNIST run and a Fashion-MNIST run, with
# epochs per second and test accuracy. The GPU machine reaches no network, so the MNIST and Fashion-MNIST IDX folders
# travel with the repository (copy them into an ignored folder and name it):
#   bash benchmarks/gpu_check.sh MNIST_IDX_DIR FASHION_IDX_DIR [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
mnist=${1:?usage: gpu_check.sh MNIST_IDX_DIR FASHION_IDX_DIR [OUT_DIR]}
fashion=${2:?usage: gpu_check.sh MNIST_IDX_DIR FASHION_IDX_DIR [OUT_DIR]}
out=${3:-gpu-check}
mkdir -p "$out"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
nvidia-smi -L
python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'capability', torch.cuda.get_device_capability(0))"
timeout 240 python -m pytest -q -n 0 -m cuda tests/test_devices.py 2>&1 | tee "$out/cuda-tests.txt"
python fashion_trainer.py prepare --source="$mnist" --out="$out/corruptedmnist" --force
for run in "corruptedmnist:--data_dir=$out/corruptedmnist" "fashionmnist:--dataset=fashionmnist --data_dir=$fashion"; do
  name=${run%%:*}
  flags=${run#*:}
  # shellcheck disable=SC2086
  timeout 150 python fashion_trainer.py train $flags --out="$out/$name" --device=cuda 2>"$out/$name.log"
  # shellcheck disable=SC2086
  result=$(python fashion_trainer.py evaluate "$out/$name/best.pt" $flags 2>/dev/null)
  python - "$out/$name/history.json" "$name" "$result" <<'PY'
import json, sys
history = json.load(open(sys.argv[1]))
epochs = history["epochs"]
print(f"{sys.argv[2]}: {len(epochs)} epochs in {epochs[-1]['seconds']:.1f} s = {len(epochs) / epochs[-1]['seconds']:.2f} epochs/s; {sys.argv[3]}")
PY
done | tee "$out/summary.txt"
