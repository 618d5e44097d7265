#!/bin/bash
# Every open GPU check in one device call (the device tool's `run`, carry [".devdata"]):
# the test suite on CUDA, benchmarks/train_speed.py before/after (234db95 = the code before
# the "Training at the GPU's speed" work) and the end-to-end folder row before/after.
# Results are packed into $OUT/r.tgz after each step, so a call cut short still returns them.
#
# Prepare here first (.devdata/ is listed in .git/info/exclude, so it travels only when carried):
#   mkdir -p .devdata/T91 .devdata/base
#   python - <<'PY'   # T91 as lossless WebP (same pixels, half the bytes)
#   from pathlib import Path; from PIL import Image
#   for p in sorted(Path("../shared/datasets/T91").glob("*.png")):
#       Image.open(p).save(f".devdata/T91/{p.stem}.webp", lossless=True, quality=100)
#   PY
#   git archive 234db95 srgan_cli | tar -x -C .devdata/base && ln -s ../../weights .devdata/base/weights
#   cp scripts/gpu_checks.sh .devdata/ ; then run: bash .devdata/gpu_checks.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=.
R=/tmp/r; mkdir -p $R
log() { echo "[$SECONDS s] $*" | tee -a $R/steps.txt; tar czf $OUT/r.tgz -C /tmp r; }
cap() { local left=$((555 - SECONDS)); [ $left -lt $1 ] && echo $((left > 5 ? left : 5)) || echo $1; }
(nvidia-smi; nproc; python3 -c "import torch,PIL,numpy;print(torch.__version__,PIL.__version__,numpy.__version__)") > $R/env.txt 2>&1
log "tests"
OMP_NUM_THREADS=2 timeout $(cap 210) python3 -m pytest -n 8 -k "not wheel" tests -p no:cacheprovider -o addopts="" -q -rfEs --timeout 200 > $R/tests.txt 2>&1
log "tests rc=$?"
TS="python3 benchmarks/train_speed.py --device cuda --data .devdata/T91 --baseline .devdata/base --json --rows pretrain-bicubic,gan-bicubic,pretrain-realistic"
timeout $(cap 160) $TS --batch-size 64 --steps 30 --warmup 10 > $R/ts64.json 2> $R/ts64.err
log "ts64 rc=$?"
E2E="-m srgan_cli benchmark --speed --size 1024 --precision fp16 --end-to-end 4 -m srresnet-x4 --device cuda --no-ablation"
timeout $(cap 60) python3 $E2E > $R/e2e_new.txt 2>&1
log "e2e new rc=$?"
(cd .devdata/base && PYTHONPATH=. timeout $(cap 60) python3 $E2E) > $R/e2e_old.txt 2>&1
log "e2e old rc=$?"
timeout $(cap 150) $TS --batch-size 512 --steps 10 --warmup 4 > $R/ts512.json 2> $R/ts512.err
log "ts512 rc=$?"
grep -E "passed|failed" $R/tests.txt | tail -3; cat $R/steps.txt
