#!/usr/bin/env bash
# One call on a lent GPU machine: `bash benchmarks/gpu.sh SECTION...`, sections run in order,
# each under its own time limit so one that hangs leaves the others their time. Logs and JSON
# go to $OUT (or ./gpu-out). Sections: tests, train7b, gen7b1, gen7b64, train13b, gen13b1, gen13b,
# compile7b, compile13b (compile time of the step and the generator, scanned and unrolled),
# minigptv2 (MiniGPT-v2's parity tests on the GPU, and its EVA ViT-g tower forward at full size,
# bfloat16, batch 1 and 16: images/s and the share of the matmul rate, which decide whether to
# cache tower outputs in training); trainminigptv2 (a MiniGPT-v2 7B LoRA step: EVA ViT-g + Llama-2-7b,
# LoRA r 64 on q/v, batch 16 x 1,024 tokens; no PyTorch peer); qwen (Qwen2.5-VL's parity tests on
# the GPU); trainqwen (a Qwen2.5-VL-7B LoRA step: 16 rows of 2,048 tokens, each with a 576-token
# image of 2,304 patches, LoRA r 128 on the LLM, the merger trained; no PyTorch peer).
# The GPU image lacks grain, ml_collections and tensorboardX: wheels for Python 3.12 in .whl/.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import jax, flax, torch, transformers, peft; print('jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"

run() {  # name limit_s command...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.log"
  echo "== $name: rc $? in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

for s in "$@"; do
  case $s in
    tests) JAX_PLATFORMS=cuda run tests 240 python3 -m pytest -q -x -p no:cacheprovider \
             tests/models/test_gpu.py tests/models/test_attention.py tests/models/test_llama.py \
             tests/generate/test_sampler.py ;;
    train7b) run train7b 420 python3 -m benchmarks.train_throughput --preset 7b --peer torch --json ;;
    gen7b1) run gen7b1 240 python3 -m benchmarks.generate_throughput --preset 7b --batch 1 --peer torch --json ;;
    gen7b64) run gen7b64 300 python3 -m benchmarks.generate_throughput --preset 7b --peer torch --json ;;
    train13b) run train13b 420 python3 -m benchmarks.train_throughput --preset 13b --peer torch --json ;;
    gen13b1) run gen13b1 240 python3 -m benchmarks.generate_throughput --preset 13b --batch 1 --peer torch --json ;;
    gen13b) run gen13b 300 python3 -m benchmarks.generate_throughput --preset 13b --peer torch --json ;;
    compile7b) run compile7b 420 python3 -m benchmarks.compile_time --preset 7b --layers 4,32 --json ;;
    compile13b) run compile13b 480 python3 -m benchmarks.compile_time --preset 13b --layers 4,40 --json ;;
    minigptv2) JAX_PLATFORMS=cuda run minigptv2 420 bash -c "python3 -m pytest -q -x -p no:cacheprovider \
                 tests/models/test_minigptv2.py && python3 -m benchmarks.eva_tower --size g --batch 1 --json \
                 && python3 -m benchmarks.eva_tower --size g --batch 16 --json" ;;
    trainminigptv2) run trainminigptv2 420 python3 -m benchmarks.train_throughput --preset minigptv2-7b --json ;;
    qwen) JAX_PLATFORMS=cuda run qwen 300 python3 -m pytest -q -x -p no:cacheprovider \
            tests/models/test_qwen2_5_vl.py tests/generate/test_qwen2_5_vl.py ;;
    trainqwen) run trainqwen 480 python3 -m benchmarks.train_throughput --preset qwen2.5-vl-7b --json ;;
    *) echo "unknown section $s"; exit 2 ;;
  esac
  tail -n 4 "$OUT/$s.log"
done
cat "$OUT/summary.txt"
