#!/usr/bin/env bash
# Issue 13's GPU figures in one call. Each part writes its JSON (and log) to OUT_DIR as soon as it ends, under
# its own time limit and the whole call's deadline, and the summary is printed however the script ends.
#
#   bash benchmarks/gpu_issue13.sh OUT_DIR            # on the device, after the wheels preamble (DEVELOPERS.md)
#   PARTS="step train" bash benchmarks/gpu_issue13.sh OUT_DIR                  # some parts only
#   DEVICE=cpu SMOKE=1 bash benchmarks/gpu_issue13.sh /tmp/out                 # tiny shapes on a CPU: checks the script
#
# Parts, in order of need, until a deadline: DEADLINE_AT (seconds since the epoch; set it before the wheels'
# install, e.g. DEADLINE_AT=$(( $(date +%s) + 570 )) for a 600 s device call), else DEADLINE seconds from now
# (default 520). Each part is limited to PART_LIMIT seconds (default 240).
#   check   check_gpu_batches.py: the batches delivered on the GPU equal the host's, bit for bit, for both
#           --gpu_batch_copy paths (training_stream, the default; side_stream, the flag), races provoked
#   train   train_joint.py on synthetic 10 s clips at 32 kHz, 128 mels, 64 + 128, 8 epochs, eager: the default copy,
#           --gpu_batch_copy side_stream, --cache_on_device; results.json's throughput
#   step    bench_step.py --mode arms at the paper's shape (bf16, channels_last), eager: joint / noaug / bare with the
#           batch on the device; joint / bare with a pinned host batch copied each step
#   loader  bench_loader.py behind a GPU spin as long as the eager step above, batches delivered by each copy path,
#           0 and 1 reader threads; then without the spin, beside the cache held on the GPU
#   compile bench_step.py compiled (joint / bare; the compile is in warmup_seconds, not in the figure), and
#           train_joint.py --torch_compile (first_step_runtime)
set -uo pipefail
OUT=$(realpath -m "${1:?usage: bash benchmarks/gpu_issue13.sh OUT_DIR}")
DEVICE=${DEVICE:-cuda}
PARTS=${PARTS:-check train step loader compile}
PY=${PYTHON:-python3}
DEADLINE_AT=${DEADLINE_AT:-$(( $(date +%s) + ${DEADLINE:-520} ))}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

if [ -n "${SMOKE:-}" ]; then
  SHAPE="--num_mel_bins 16 --frames 21 --asc_batch_size 4 --aet_batch_size 8"
  ROWS=64
  CHECK="--num_mel_bins 16 --frames 21 --num_rows 128"
  STEP="--encoder resnet10t --rounds 2 --steps 1"
  WARMUP=1
  TRAIN="--sampling_rate 16000 --clip_seconds 1 --num_mel_bins 16 --asc_batch_size 4 --aet_batch_size 8
         --synthetic_train_clips_per_scene 4 --synthetic_test_clips_per_scene 2 --max_train_steps 2 --encoder resnet10t
         --mixed_precision no"
  LIMIT=600
else
  SHAPE="--num_mel_bins 128 --frames 1001 --asc_batch_size 64 --aet_batch_size 128"
  ROWS=${ROWS:-2048}
  CHECK=""
  STEP="--precision bf16 --rounds 7 --steps 10"
  WARMUP=5
  TRAIN="--sampling_rate 32000 --clip_seconds 10 --num_mel_bins 128 --hop_length 320 --asc_batch_size 64
         --aet_batch_size 128 --synthetic_train_clips_per_scene 100 --num_train_epochs 8 --mixed_precision bf16
         --preprocessing_num_workers 8"
  LIMIT=${PART_LIMIT:-240}
fi

part() {  # part NAME COMMAND...: run under min(LIMIT, time left), log to OUT/NAME.log, print the last lines
  local name=$1; shift
  local left=$((DEADLINE_AT - $(date +%s) - 15)) started=$SECONDS  # 15 s kept for the summary
  if [ "$left" -lt 20 ]; then echo "== $name: skipped, the deadline is near"; return; fi
  echo "== $name: $*"
  timeout -k 5 "$((left < LIMIT ? left : LIMIT))" "$@" > "$OUT/$name.log" 2>&1
  echo "   exit $? after $((SECONDS - started)) s"; tail -n 3 "$OUT/$name.log" | sed 's/^/   /'
}

summary() {
  echo "== summary ($SECONDS s)"
  [ -f "$OUT/check_gpu_batches.log" ] && echo "check_gpu_batches: $(tail -n 1 "$OUT/check_gpu_batches.log")"
  $PY - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

def number(value, digits=1):
    return "n/a" if value is None else f"{value:,.{digits}f}"

def read(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        print(f"{path.name}: unreadable ({error})")

out = Path(sys.argv[1])
for path in sorted(out.glob("step_*.json")):
    if (d := read(path)) is None:
        continue
    sps = ", ".join(f"{arm} {value:,.0f}" for arm, value in d["samples_per_second"].items())
    warm = ", ".join(f"{arm} {value:.1f} s" for arm, value in d.get("warmup_seconds", {}).items())
    print(f"{path.stem}: samples/s {sps}; joint/bare time {d['ratio_joint_over_bare']['median']:.3f}; warm-up {warm}")
for path in sorted(out.glob("train_*.json")):
    if (d := read(path)) is None:
        continue
    print(f"{path.stem}: train_samples_per_second {number(d['train_samples_per_second'], 0)} (steady "
          f"{number(d.get('train_steady_samples_per_second'), 0)}), first_step_runtime {number(d.get('first_step_runtime'))} s, "
          f"eval_runtime {number(d['eval_runtime'])} s, data_wait_fraction {number(d['data_wait_fraction'], 3)}, "
          f"steps {d['steps']}, device {d['environment']['device']}, {d['environment']['mixed_precision']}")
for path in sorted(out.glob("loader*.json")):
    if (d := read(path)) is None:
        continue
    figures = ", ".join(f"{key}: {value['samples_per_second']:,.0f} samples/s, "
                        f"{value['seconds_per_epoch']['median'] / value['steps_per_epoch'] * 1e3:.1f} ms a step"
                        for key, value in d["workers"].items())
    if d["settings"]["step_ms"]:
        verdict = f"behind a {d['settings']['step_ms']:.1f} ms step"
    elif "ratio_loader_over_step" in d:
        verdict = (f"loader/step {d['ratio_loader_over_step']:.1f} ({d['ratio_reader_threads']} reader threads)"
                   + ("" if d.get("step_has_same_shape", True) else " [the step had another shape]"))
    else:
        verdict = "no step to compare with"
    print(f"{path.stem}: {figures}; {verdict}")
EOF
}
trap summary EXIT

if [[ " $PARTS " == *" check "* ]]; then
  part check_gpu_batches $PY benchmarks/check_gpu_batches.py --device "$DEVICE" $CHECK
fi

if [[ " $PARTS " == *" train "* ]]; then
  RUNS=$(mktemp -d)  # the models stay here; only results.json comes back
  for arm in "eager_loader" "eager_side_stream --gpu_batch_copy side_stream" "eager_on_device --cache_on_device"; do
    name=${arm%% *}; flags=${arm#"$name"}
    part "train_$name" $PY scripts/train_joint.py --output_dir "$RUNS/$name" $TRAIN $flags
    cp "$RUNS/$name/results.json" "$OUT/train_$name.json" 2>/dev/null
  done
fi

S="--mode arms --device $DEVICE $SHAPE --channels_last $STEP"
if [[ " $PARTS " == *" step "* ]]; then
  part step_eager_device $PY benchmarks/bench_step.py $S --arms joint,noaug,bare --warmup 2 --placement device \
      --output "$OUT/step_eager_device.json"
  [[ "$DEVICE" == cuda* ]] && part step_eager_pinned $PY benchmarks/bench_step.py $S --arms joint,bare --warmup 2 \
      --placement pinned --output "$OUT/step_eager_pinned.json"
fi

if [[ " $PARTS " == *" loader "* ]]; then
  L="$SHAPE --num_rows $ROWS --workers 0,1 --copy_to $DEVICE"
  [ -f "$OUT/step_eager_device.json" ] && L="$L --step_results $OUT/step_eager_device.json"
  STEP_MS=$($PY -c "import json, sys; d = json.load(open(sys.argv[1])); print(1000 / d['samples_per_second']['joint'] * sum(
      d['settings'][k] for k in ('asc_batch_size', 'aet_batch_size')))" "$OUT/step_eager_device.json" 2>/dev/null || echo 30)
  for copy in training_stream side_stream; do  # the default, then the flag, behind a GPU spin as long as the step
    part "loader_behind_step_$copy" $PY benchmarks/bench_loader.py $L --gpu_batch_copy $copy --on_device "" \
        --step_ms "$STEP_MS" --output "$OUT/loader_behind_step_$copy.json"
  done
  part loader $PY benchmarks/bench_loader.py $L --on_device "$DEVICE" --output "$OUT/loader.json"
fi

if [[ " $PARTS " == *" compile "* ]]; then  # last: the longest and the least needed
  part step_compiled_device $PY benchmarks/bench_step.py $S --arms joint,bare --compile --warmup "$WARMUP" \
      --placement device --output "$OUT/step_compiled_device.json"
  RUNS=${RUNS:-$(mktemp -d)}
  part train_compiled_loader $PY scripts/train_joint.py --output_dir "$RUNS/compiled" $TRAIN --torch_compile
  cp "$RUNS/compiled/results.json" "$OUT/train_compiled_loader.json" 2>/dev/null
fi
