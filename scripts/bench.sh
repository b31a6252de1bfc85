#!/usr/bin/env bash
# Benchmark: Switchyard on its llama.cpp engine and on mistral.rs vs llama.cpp itself
# (llama-cpp-python's OpenAI server, built from source by pip for this CPU) on the same GGUF,
# measured in one run. Prints TTFT, decode tok/s, throughput at 1/4/16 clients, a long-prompt
# request, and each one's ratio to llama-cpp-python; then `switchyard bench-adapters` on the
# llama.cpp engine. Extra arguments go to `switchyard bench`.
# llama-cpp-python's server by default cuts a running stream when a new request arrives;
# `--interrupt_requests False` makes it queue them, as Switchyard does.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

python3 scripts/fetch_models.py
MODEL="$ROOT/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_CPP_PYTHON=0.3.36
if ! .venv-bench/bin/python -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_PYTHON')" 2>/dev/null; then
  echo "bench: building llama-cpp-python==$LLAMA_CPP_PYTHON (compiles llama.cpp; several minutes)"
  python3 -m venv .venv-bench
  # Built for the CPU it runs on: each instruction set this CPU has, and no other (a build
  # with AVX-512 dies with "Illegal instruction" on an AVX2-only machine). AMX stays off: a
  # native build enables it where the CPU has it, and where the kernel does not grant AMX to
  # the process (containers) prompt decoding then segfaults.
  flags=" $(grep -m1 '^flags' /proc/cpuinfo) "
  cmake_args="-DGGML_NATIVE=OFF"
  for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C avx512f:AVX512 avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16 avx_vnni:AVX_VNNI; do
    case "$flags" in *" ${pair%%:*} "*) cmake_args+=" -DGGML_${pair#*:}=ON" ;; esac
  done
  echo "bench: llama-cpp-python with $cmake_args"
  CMAKE_ARGS="$cmake_args" \
    .venv-bench/bin/pip install -q --no-cache-dir --disable-pip-version-check "llama-cpp-python[server]==$LLAMA_CPP_PYTHON"
fi
scripts/build-deps.sh
# The mistral.rs engine is one of the targets, so this build has it.
cargo build --locked -p switchyard-server --bin switchyard --features mistralrs
BIN="$CARGO_TARGET_DIR/debug/switchyard"

SY_PORT=${SY_PORT:-18090}
MR_PORT=${MR_PORT:-18092}
LC_PORT=${LC_PORT:-18091}
SG_PORT=${SG_PORT:-18093}
LQ_PORT=${LQ_PORT:-18094}
# Switchyard serves Q8_0 by default (engine_weights), re-encoded at load; llama-cpp-python
# also serves that encoding, made by the same llama.cpp quantizer, for a same-weights ratio.
Q8_MODEL="${TMPDIR:-/tmp}/switchyard-bench-q8_0.gguf"
.venv-bench/bin/python - "$MODEL" "$Q8_MODEL" 2>/tmp/llama-cpp-quantize.log <<'PY'
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
params.allow_requantize = True
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
PY
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -f "${Q8_MODEL:-}"; }
trap cleanup EXIT

# Both engines serve side by side (no index: the bench measures generation, and two servers
# cannot share one index folder); the bench measures one server at a time, so no two
# compete for the cores.
"$BIN" serve --listen "127.0.0.1:$SY_PORT" --model-path "$MODEL" --max-in-flight 64 --auth-disabled true --retrieval-enabled false \
  --engine llama.cpp >/tmp/switchyard-bench.log 2>&1 &
pids+=($!)
# The same engine on the GGUF's own Q4_1 tensors: the same-file comparison with llama.cpp.
"$BIN" serve --listen "127.0.0.1:$SG_PORT" --model-path "$MODEL" --max-in-flight 64 --auth-disabled true --retrieval-enabled false \
  --engine llama.cpp --engine-weights gguf >/tmp/switchyard-bench-gguf.log 2>&1 &
pids+=($!)
"$BIN" serve --listen "127.0.0.1:$MR_PORT" --model-path "$MODEL" --max-in-flight 64 --auth-disabled true --retrieval-enabled false \
  --engine mistralrs ${ENGINE_INSTANCES:+--engine-instances "$ENGINE_INSTANCES"} >/tmp/switchyard-bench-mistralrs.log 2>&1 &
pids+=($!)
.venv-bench/bin/python -m llama_cpp.server --model "$MODEL" --model_alias smollm2-135m-instruct \
  --host 127.0.0.1 --port "$LC_PORT" --n_ctx 2048 --n_threads "$(nproc)" --interrupt_requests False >/tmp/llama-cpp-bench.log 2>&1 &
pids+=($!)
.venv-bench/bin/python -m llama_cpp.server --model "$Q8_MODEL" --model_alias smollm2-135m-instruct \
  --host 127.0.0.1 --port "$LQ_PORT" --n_ctx 2048 --n_threads "$(nproc)" --interrupt_requests False >/tmp/llama-cpp-bench-q8.log 2>&1 &
pids+=($!)

for url in "http://127.0.0.1:$SY_PORT/ready" "http://127.0.0.1:$SG_PORT/ready" "http://127.0.0.1:$MR_PORT/ready" \
  "http://127.0.0.1:$LC_PORT/v1/models" "http://127.0.0.1:$LQ_PORT/v1/models"; do
  for _ in $(seq 1 300); do curl -sf "$url" >/dev/null && break; sleep 1; done
  curl -sf "$url" >/dev/null || { echo "bench: $url never came up"; tail -20 /tmp/switchyard-bench.log /tmp/switchyard-bench-mistralrs.log /tmp/llama-cpp-bench.log; exit 1; }
done

"$BIN" bench --target "switchyard-llama=http://127.0.0.1:$SY_PORT" \
  --target "switchyard-llama-q4_1=http://127.0.0.1:$SG_PORT" \
  --target "llama.cpp-q8_0=http://127.0.0.1:$LQ_PORT#smollm2-135m-instruct" \
  --target "switchyard-mistral=http://127.0.0.1:$MR_PORT" \
  --baseline "llama.cpp=http://127.0.0.1:$LC_PORT#smollm2-135m-instruct" "$@"

# Adapters on the default engine (llama.cpp, in this process; the servers above sit idle):
# load time, activation to the first token of the new generation, decode with an adapter vs
# the base, and resident memory with 1, 10 and 50 adapters.
"$BIN" bench-adapters --model "$MODEL" --swaps 30
