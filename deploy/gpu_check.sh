#!/usr/bin/env bash
# Build + parity + timing on a CUDA machine: TensorRT engines (fp32 and fp16), ONNX Runtime's CUDA
# provider, fp16 graphs. Run from the repository root on a GPU host with `pip install '.[gpu]'`:
#   deploy/gpu_check.sh [MODEL_DIR] [OUT_DIR]
# Prints one parity line per graph variant and the fused-CFG U-Net rows/s per runner; exits non-zero
# when a parity check fails.
set -euo pipefail

MODEL=${1:-models/shapes/pipeline}
OUT=${2:-.work/export-gpu}
PY=${PYTHON:-python}

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.cuda.get_device_name())"
"$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
if "$PY" -c "import tensorrt" 2>/dev/null; then TRT=(--tensorrt); else TRT=(); echo "tensorrt not importable: skipping engines"; fi

"$PY" -m service.commands.cli export --model "$MODEL" --out "$OUT" --fp16 "${TRT[@]}"
"$PY" -m service.commands.cli export --model "$MODEL" --out "$OUT" --check-only --cuda
"$PY" -m service.commands.cli export --model "$MODEL" --out "$OUT" --bench --bench-rows 16
