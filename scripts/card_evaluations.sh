#!/usr/bin/env bash
# The model card's sampler and distribution evaluations of a pipeline on one GPU host:
#   - the sampler table (DDIM, DPM-Solver++, UniPC at 4/8/12/25 steps; benchmarks/eval_schedulers.py)
#     on 300 test clips per family;
#   - the distribution evaluation (benchmarks/eval_distribution.py) on 200 test scenes per family with
#     10 GT futures each: static, the MoMap-VAE baseline, the futures through the pipeline's VAE (an
#     oracle: the spread its latent space keeps), the pipeline across guidance scales and
#     with ancestral DDPM sampling.
# Each runs in SHARDS processes side by side on the one GPU; each shard saves its rows in parts as
# they finish, so a run stopped by a time limit keeps them and the same command resumes it. The
# merged results land in OUT/schedulers/all and OUT/distribution/all.
#
#   bash scripts/card_evaluations.sh [PIPELINE] [OUT] [SHARDS] [WHICH]
#   bash scripts/card_evaluations.sh momap-diffusion outputs/card 8 distribution   # one of the two
#   DEVICE=cpu CLIPS=2 SCENES=2 FUTURES=2 SAMPLES=2 bash scripts/card_evaluations.sh momap-diffusion /tmp/c 2
#                                                     # a check of the script itself on a CPU (minutes)
#
# Then, for the card: checkpoints/logs/sampler_steps.csv <- OUT/schedulers/all/sampler_steps.csv,
# checkpoints/logs/distribution_per_scene.csv.gz <- OUT/distribution/all/distribution_per_scene.csv.gz.
set -euo pipefail
PIPELINE=${1:-momap-diffusion}
OUT=${2:-outputs/card_evaluations}
SHARDS=${3:-8}
WHICH=${4:-all}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
CLIPS=${CLIPS:-300}
SCENES=${SCENES:-200}
FUTURES=${FUTURES:-10}
SAMPLES=${SAMPLES:-10}
export TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
last=$((SHARDS - 1))
FAST=()
[[ $DEVICE == cuda* ]] && FAST=(--fast)
mkdir -p "$OUT/logs"

wait_all() {  # waits for every shard; fails (naming the logs) if one of them failed
  local failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  pids=()
  if ((failed)); then echo "a shard failed; see $OUT/logs/$1.*.log" >&2; exit 1; fi
}
pids=()

if [[ $WHICH == all || $WHICH == schedulers ]]; then
  for k in $(seq 0 $last); do
    "$PYTHON" "$HERE/benchmarks/eval_schedulers.py" --diffusion "$PIPELINE" --clips "$CLIPS" --shard "$k/$SHARDS" \
      --num-samples "$SAMPLES" --chunks 5 "${FAST[@]}" --device "$DEVICE" --out "$OUT/schedulers/s$k" \
      > "$OUT/logs/schedulers.$k.log" 2>&1 &
    pids+=($!)
  done
  wait_all schedulers
  "$PYTHON" "$HERE/benchmarks/eval_schedulers.py" --merge "$OUT"/schedulers/s* --out "$OUT/schedulers/all"
fi

if [[ $WHICH == all || $WHICH == distribution ]]; then
  for k in $(seq 0 $last); do
    "$PYTHON" "$HERE/benchmarks/eval_distribution.py" --scenes "$SCENES" --futures "$FUTURES" --shard "$k/$SHARDS" \
      --num-samples "$SAMPLES" --chunks 5 "${FAST[@]}" --device "$DEVICE" --sim-device "$DEVICE" --workers 1 \
      --method static=static --method momap-vae=momap-vae-baseline --method "vae-futures=vae-futures:$PIPELINE" \
      --method "ours=$PIPELINE" \
      --method "ours-ddpm=$PIPELINE" --scheduler ours-ddpm=ddpm --sweep ours ours-ddpm \
      --guidance-scales 1 1.5 2 3 4 --out "$OUT/distribution/s$k" > "$OUT/logs/distribution.$k.log" 2>&1 &
    pids+=($!)
  done
  wait_all distribution
  "$PYTHON" "$HERE/benchmarks/eval_distribution.py" --merge "$OUT"/distribution/s* --out "$OUT/distribution/all"
fi
