#!/usr/bin/env bash
# A mini reproduction of Parikh et al. (Interspeech 2022) on the embedded synthetic data: the alpha
# sweep with baselines and gradient diagnostics, event-set strategy, T and k, pre-train vs joint,
# and the report (Figures 2-5, table, Pearson correlations). About 40-60 minutes on 2 CPU cores.
#
#   bash scripts/reproduce_mini.sh [OUTPUT_ROOT] [REPORT_DIR]     # defaults: outputs/mini reports/mini
#
# Resumable: finished runs (results.json present) are skipped when the script is run again.
# The budget is scaled down from the paper's: 320 scene clips, batches of 16 + 32, 6 epochs, 2 seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-outputs/mini}
REPORT=${2:-reports/mini}
BUDGET=${MINI_BUDGET:-"--asc_batch_size 16 --aet_batch_size 32 --max_asc_train_samples 320 --num_train_epochs 6"}
PRETRAIN_BUDGET=${MINI_PRETRAIN_BUDGET:-"--asc_batch_size 16 --aet_batch_size 32 --max_asc_train_samples 320"}
export OMP_NUM_THREADS=1 WANDB_MODE=${WANDB_MODE:-disabled}  # two runs at a time, one core each
start=$(date +%s)

python scripts/run_sweep.py sweeps/mini/alpha.yaml --output_root "$ROOT" --parallel 2 --launcher python \
    --extra_args "$BUDGET"

# Correlated / uncorrelated classes: rank the event classes by an event-only tagger's mean score on
# the scene training clips (the alpha = 1 baseline of the sweep above).
tagger=$(ls -d "$ROOT"/alpha/*alpha=1.0*seed=0* | head -n 1)
[ -f "$ROOT/ranking.json" ] || python scripts/rank_events.py --tagger "$tagger" --asc_dataset synthetic \
    --output_file "$ROOT/ranking.json"

build() {  # k hours strategy
    local dir="outputs/mini/aet_subsets/k=$1_hours=$2_strategy_$3"  # the paths sweeps/mini/aet_subsets.yaml names
    [ -f "$dir/subset_info.json" ] || python scripts/build_aet_subset.py --source synthetic --k "$1" --hours "$2" \
        --strategy "$3" --ranking "$ROOT/ranking.json" --seed 0 --output_dir "$dir"
}
build 2 0.15 speech_music
for strategy in random correlated uncorrelated; do build 10 0.15 "$strategy"; done
for hours in 0.05 0.15 0.4; do build 40 "$hours" random; done

python scripts/run_sweep.py sweeps/mini/aet_subsets.yaml --output_root "$ROOT" --parallel 2 --launcher python \
    --extra_args "$BUDGET"
python scripts/run_sweep.py sweeps/mini/pretrain.yaml --output_root "$ROOT" --parallel 2 --launcher python \
    --extra_args "$PRETRAIN_BUDGET"

python scripts/report.py "$ROOT" --output_dir "$REPORT"
echo "mini reproduction finished in $(( ($(date +%s) - start) / 60 )) minutes; report in $REPORT"
