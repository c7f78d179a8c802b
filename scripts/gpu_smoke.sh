#!/usr/bin/env bash
# GPU smoke test of the verl engine: on one GPU, two curriculum stages of the toy world with
# 2 verl steps each (GRPO + the SENT loss, vLLM rollouts, exact token entropy), the second stage
# starting from the first one's merged weights; prints each stage's metrics.
#
#   scripts/gpu_smoke.sh [MODEL_DIR] [RUN_DIR]
#
# MODEL_DIR: a local Hugging Face model directory (default: the toy model, bootstrapped if missing).
# Needs the GPU environment: pip install -e ".[gpu]" (verl 0.9 + vLLM 0.24), or docker/gpu.Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL_DIR=${1:-data/models/toy}
RUN_DIR=${2:-data/runs/gpu-smoke-$(date +%Y%m%d-%H%M%S)}
CONFIG=configs/toy.yaml
SENT=${SENT:-sent}
COMMON=(
  "model.path=$MODEL_DIR" model.device=cuda
  training.engine=verl training.verl.nnodes=1 training.verl.n_gpus_per_node=1
  training.verl.gpu_memory_utilization=0.3 training.verl.val_limit=32 training.val_every=2 training.save_every=2
)

if [ "$MODEL_DIR" = data/models/toy ] && [ ! -f data/models/toy/bootstrap.json ]; then
  "$SENT" toy bootstrap --config "$CONFIG"
fi
python -c "import torch, verl, vllm; assert torch.cuda.is_available(), 'no GPU'; print('torch', torch.__version__, 'verl', verl.__version__, 'vllm', vllm.__version__)"

"$SENT" curate --config "$CONFIG" "${COMMON[@]}" data.limit=256 --out "$RUN_DIR/curate"
for stage in 1 2; do
  "$SENT" train --config "$CONFIG" "${COMMON[@]}" --stage "$stage" --curriculum "$RUN_DIR/curate" --out "$RUN_DIR" --max-steps 2
  echo "== stage $stage metrics ($RUN_DIR/stage-$stage/metrics.jsonl)"
  python - "$RUN_DIR/stage-$stage" <<'PY'
import json, sys
from pathlib import Path
stage = Path(sys.argv[1])
for line in (stage / "metrics.jsonl").read_text().splitlines():
    m = json.loads(line)
    keys = [k for k in m if k.startswith(("critic/score/mean", "actor/entropy", "actor/pg_loss", "actor/n_penalised", "response_length/mean", "timing_s/step"))]
    print(f"step {int(m['step'])}: " + ", ".join(f"{k}={m[k]:.4g}" for k in sorted(keys)))
info = json.loads((stage / "final" / "stage.json").read_text())
print(f"merged weights: {stage / 'final'} (from {info['checkpoint']}, start {info['start_model']})")
PY
done
echo "gpu smoke test passed: $RUN_DIR"
