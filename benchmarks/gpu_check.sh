#!/usr/bin/env bash
# The GPU check: one prepared call of at most 8 minutes on a machine with a CUDA GPU, no network and no `fire`.
#
#   bash benchmarks/gpu_check.sh prepare    here: fire's and termcolor's wheels into .whl/, MNIST and Fashion-MNIST from
#                                           ../shared/data into .gpu-data/ (both git-ignored: the device tool carries them)
#   bash benchmarks/gpu_check.sh run OUT    there: the runs, the step profile and the tests, in that order (timings on a
#                                           quiet machine first); OUT gets summary.md and logs.tar.gz (2 of the 8 files
#                                           that come back), and the table ends stdout
#   bash benchmarks/gpu_check.sh rehearse   here, on the CPU: the same steps, shorter, to check the script before a lease
#
# The device tool's call: run(command="bash benchmarks/gpu_check.sh run $OUT", carry=[".whl", ".gpu-data"], timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: gpu_check.sh prepare | run OUT | rehearse}

if [ "$mode" = prepare ]; then
  set -e
  shared=${FASHION_TRAINER_SHARED_DATA:-../shared/data}
  mkdir -p .whl .gpu-data
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl fire==0.7.1 termcolor==3.3.0
  cp -r "$shared/mnist" "$shared/fashion-mnist" .gpu-data/
  du -sh .whl .gpu-data
  exit 0
fi

if [ "$mode" = rehearse ]; then  # the CPU: one epoch where the GPU trains ten, bf16 where it trains fp16, the CUDA tests skip
  device=cpu short=--epochs=1 half=--precision=bf16 suite=tests/test_cli.py out=${2:-/tmp/gpu-rehearsal}
else
  device=cuda short= half=--precision=fp16 suite=tests out=${2:?usage: gpu_check.sh run OUT}
fi
mkdir -p "$out" && out=$(cd "$out" && pwd)
work=$(mktemp -d)
logs=$work/logs && mkdir -p "$logs"
started=$SECONDS
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1 FASHION_TRAINER_SHARED_DATA=$PWD/.gpu-data
if ! python3 -c "import fire" 2>/dev/null; then  # the GPU machine has none: the wheels carried in .whl/
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" .whl/*.whl && export PYTHONPATH=$work/site
fi
{ command -v nvidia-smi >/dev/null && nvidia-smi -L; python3 -c "import torch, platform; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'python', platform.python_version(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU', '|', __import__('os').cpu_count(), 'cores')"; } | tee "$logs/machine.txt"

python3 fashion_trainer.py prepare --source=.gpu-data/mnist --out="$work/corruptedmnist" --seed=1 >"$logs/prepare.log" 2>&1
corrupted="--data_dir=$work/corruptedmnist"
runs=(  # name|the data's flags|train's other flags
  "default|$corrupted|$short"
  "fp16|$corrupted|$short $half"
  "compile|$corrupted|$short --compile"
  "budget5|$corrupted|--budget=5"
  "budget10|$corrupted|--budget=10"
  "budget20|$corrupted|--budget=20"
  "fashionmnist|--dataset=fashionmnist --data_dir=.gpu-data/fashion-mnist|$short"
)
for run in "${runs[@]}"; do
  IFS='|' read -r name data flags <<<"$run"
  begun=$SECONDS
  # shellcheck disable=SC2086
  timeout 150 python3 fashion_trainer.py train $data $flags --out="$work/runs/$name" --device=$device >"$logs/$name.log" 2>&1
  echo "exit $? after $((SECONDS - begun)) s" >>"$logs/$name.log"
  # shellcheck disable=SC2086
  timeout 60 python3 fashion_trainer.py evaluate "$work/runs/$name/best.pt" $data --device=$device >>"$logs/$name.log" 2>&1
  cp "$work/runs/$name/history.json" "$logs/$name.history.json" 2>/dev/null
done
for precision in auto fp16; do
  [ "$device" = cpu ] && [ "$precision" = fp16 ] && continue
  timeout 120 python3 benchmarks/step_profile.py --device=$device --precision=$precision --data_dir="$work/corruptedmnist" \
    >"$logs/profile-$precision.json" 2>"$logs/profile-$precision.log"
done
timeout 240 python3 -m pytest -q -n 0 -p no:cacheprovider -m cuda tests/test_devices.py >"$logs/cuda-tests.log" 2>&1
left=$((470 - (SECONDS - started)))
if [ $left -gt 30 ]; then  # the rest of the suite in what is left of the 8 minutes (each test that means the CPU says so)
  timeout $left python3 -m pytest -q -n 8 -p no:cacheprovider -m "not cuda" "$suite" >"$logs/suite.log" 2>&1
else
  echo "not run: $left s left" >"$logs/suite.log"
fi
python3 - "$logs" "$out/summary.md" "$((SECONDS - started))" <<'PY'
import json, re, sys
from pathlib import Path
logs, summary, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
rows = ["| check | result | epochs | training s | start s | ms a step | test accuracy |", "| --- | --- | --- | --- | --- | --- | --- |"]
order = ["default", "fp16", "compile", "budget5", "budget10", "budget20", "fashionmnist", "cuda-tests", "suite"]
for name in order:
    text = (logs / f"{name}.log").read_text(errors="replace") if (logs / f"{name}.log").exists() else "not run"
    if name in ("cuda-tests", "suite"):
        tail = [line for line in text.splitlines() if re.search(r"passed|failed|skipped|error|not run", line)]
        failed = re.findall(r"^FAILED (\S+)", text, re.MULTILINE)
        rows.append(f"| {name} | {(tail or ['no result'])[-1]} {' '.join(failed)} | | | | | |")
        continue
    history = json.loads((logs / f"{name}.history.json").read_text()) if (logs / f"{name}.history.json").exists() else {"epochs": []}
    start = re.search(r"start: (\S+) s .*?a step takes (\d+) ms", text)
    accuracy = re.search(r"Test accuracy: (\S+)", text)
    status = re.search(r"exit (\d+) after (\d+) s", text)
    error = re.search(r"^error: (.*)$", text, re.MULTILINE)
    epochs = history["epochs"]
    rows.append(
        f"| {name} | exit {status.group(1) if status else '?'}, {status.group(2) if status else '?'} s{'; ' + error.group(1)[:80] if error else ''} "
        f"| {len(epochs)} | {epochs[-1]['seconds'] if epochs else '-'} | {start.group(1) if start else '-'} | {start.group(2) if start else '-'} "
        f"| {accuracy.group(1) if accuracy else '-'} |"
    )
for profile in sorted(logs.glob("profile-*.json")):
    try:
        p = json.loads(profile.read_text().splitlines()[-1])
        what = f"{p['launches_per_step']} kernel launches a step, GPU busy {p['gpu_busy_share']:.0%}" if "launches_per_step" in p else f"{p['dispatches_per_step']} operations dispatched a step"
        rows.append(f"| step profile {p['precision']} | {what} | | | | {p['ms_per_step']} | {p['images_per_s']} images/s |")
    except (ValueError, IndexError, KeyError) as exc:
        rows.append(f"| {profile.stem} | failed: {exc} | | | | | |")
machine = (logs / "machine.txt").read_text().strip().splitlines()
text = "\n".join([f"GPU check: {' / '.join(machine)}; {seconds} s in all", "", *rows]) + "\n"
summary.write_text(text)
print(text)
PY
tar czf "$out/logs.tar.gz" -C "$work" logs
rm -rf "$work"
