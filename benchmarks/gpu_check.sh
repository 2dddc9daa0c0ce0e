#!/usr/bin/env bash
# The GPU check: one prepared run, under 8 minutes on one H100, that needs no network.
#
#   OUT=DIR [GPU_CHECK_WORK=DIR] bash benchmarks/gpu_check.sh PATH/TO/fra-eng.zip   (make gpu-check DATA=...)
#   bash benchmarks/gpu_check.sh PATH/TO/fra-eng.zip --dry-run      the same stages on this CPU, tiny
#
# Installs mtkit without dependencies into the machine's Python (its PyTorch, typer, rich,
# sacrebleu, sentencepiece and pytest), then benchmarks/gpu_check.py runs the stages, each under
# its own time limit, a failure recorded and the next stage run all the same: tests/test_cuda.py,
# a short training in fp32, bf16 and fp16, the best recipe for 2 minutes in bf16 (target tokens/s,
# dev BLEU, GPU memory and utilisation), greedy and beam-5 decoding of the test split.
# Logs, translations and summary.json/summary.txt go to $OUT (default work/gpu-check); the data
# and run directories (checkpoints: hundreds of MB) to $GPU_CHECK_WORK (default: $OUT).
set -u
if [ $# -lt 1 ] || [ ! -f "$1" ]; then
    echo "usage: OUT=DIR bash benchmarks/gpu_check.sh CORPUS.zip [--dry-run]: no corpus file at '${1:-}'" >&2
    exit 2
fi
CORPUS=$(realpath -- "$1"); shift
OUT=$(realpath -m -- "${OUT:-work/gpu-check}")  # paths are the caller's; then run from the checkout
WORK=$(realpath -m -- "${GPU_CHECK_WORK:-$OUT}")
cd "$(dirname "$0")/.."
PYTHON=$(realpath -s -- "$(command -v "${PYTHON:-python3}")")
mkdir -p "$OUT"
export GPU_CHECK_START=${GPU_CHECK_START:-$(date +%s)}

# Install unless this Python already imports this checkout's mtkit (e.g. its own venv).
here=$(pwd -P)
if (cd /tmp && "$PYTHON" -c "import mtkit, pathlib, sys; sys.exit(pathlib.Path(mtkit.__file__).resolve().parents[1] != pathlib.Path('$here'))") 2>/dev/null; then
    echo "install: this checkout's mtkit is already importable" | tee "$OUT/install.log"
elif timeout 60 "$PYTHON" -m pip install --no-deps --no-build-isolation --no-index -e . > "$OUT/install.log" 2>&1; then
    echo "install: pip install --no-deps -e . done"
else
    # No network and no build tools: run from the checkout instead.
    echo "install: pip failed (see $OUT/install.log); using PYTHONPATH=$here" | tee -a "$OUT/install.log"
    export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PYTHON" benchmarks/gpu_check.py "$CORPUS" --out "$OUT" --work "$WORK" "$@"
