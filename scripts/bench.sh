#!/usr/bin/env bash
# Benchmark: Switchyard vs llama.cpp (llama-cpp-python's OpenAI server, built from source by
# pip) on the same GGUF, measured in one run. Prints TTFT, decode tok/s, throughput at
# 1/4/16 clients, and the ratios. Extra arguments go to `switchyard bench`.
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
  # A native build enables AMX on CPUs that have it; where the kernel does not grant AMX to the
  # process (containers), prompt decoding then segfaults. Build for AVX2/AVX-512 without AMX.
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON" \
    .venv-bench/bin/pip install -q --no-cache-dir --disable-pip-version-check "llama-cpp-python[server]==$LLAMA_CPP_PYTHON"
fi
cargo build --locked -p switchyard-server --bin switchyard
BIN="$CARGO_TARGET_DIR/debug/switchyard"

SY_PORT=${SY_PORT:-18090}
LC_PORT=${LC_PORT:-18091}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN" serve --listen "127.0.0.1:$SY_PORT" --model-path "$MODEL" --max-in-flight 64 --auth-disabled true \
  ${ENGINE_INSTANCES:+--engine-instances "$ENGINE_INSTANCES"} >/tmp/switchyard-bench.log 2>&1 &
pids+=($!)
.venv-bench/bin/python -m llama_cpp.server --model "$MODEL" --model_alias smollm2-135m-instruct \
  --host 127.0.0.1 --port "$LC_PORT" --n_ctx 2048 --n_threads "$(nproc)" --interrupt_requests False >/tmp/llama-cpp-bench.log 2>&1 &
pids+=($!)

for url in "http://127.0.0.1:$SY_PORT/ready" "http://127.0.0.1:$LC_PORT/v1/models"; do
  for _ in $(seq 1 300); do curl -sf "$url" >/dev/null && break; sleep 1; done
  curl -sf "$url" >/dev/null || { echo "bench: $url never came up"; tail -20 /tmp/switchyard-bench.log /tmp/llama-cpp-bench.log; exit 1; }
done

"$BIN" bench --target "switchyard=http://127.0.0.1:$SY_PORT" \
  --baseline "llama.cpp=http://127.0.0.1:$LC_PORT#smollm2-135m-instruct" "$@"
