#!/usr/bin/env bash
# Builds llama.cpp's llama-server, llama-quantize and llama-perplexity into .llama.cpp/build/bin
# (`make llama-cpp`). The source is the llama.cpp that the pip sdist of llama-cpp-python vendors
# (commit 0c1e570 in 0.3.36), so it comes from the same package index as everything else.
# Idempotent: when the three binaries exist it only prints where they are.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ROOT="${LLAMA_CPP_DIR:-.llama.cpp}"
JOBS="${JOBS:-$(nproc)}"
BIN="$ROOT/build/bin"
TARGETS=(llama-server llama-quantize llama-perplexity)

built() { for t in "${TARGETS[@]}"; do [[ -x "$BIN/$t" ]] || return 1; done; }

if built; then
    echo "llama.cpp already built: $(cd "$BIN" && pwd)"
    exit 0
fi

mkdir -p "$ROOT"
if [[ ! -f "$ROOT/src/CMakeLists.txt" ]]; then
    python -m pip download --quiet --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$VERSION" -d "$ROOT/sdist"
    tar -xzf "$ROOT/sdist/llama_cpp_python-$VERSION.tar.gz" -C "$ROOT/sdist"
    rm -rf "$ROOT/src.tmp"
    cp -r "$ROOT/sdist/llama_cpp_python-$VERSION/vendor/llama.cpp" "$ROOT/src.tmp"
    mv "$ROOT/src.tmp" "$ROOT/src"    # atomic: a half-copied tree is never taken for a source tree
fi

# AMX off: on this CPU (Sapphire Rapids) q8_0 segfaults at warm-up in ggml's AMX repack path;
# AVX-512 + VNNI without AMX is faster than running with --no-repack.
start=$(date +%s)
cmake -S "$ROOT/src" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF >/dev/null
cmake --build "$ROOT/build" --config Release -j"$JOBS" --target "${TARGETS[@]}"
built || { echo "llama.cpp build finished but $BIN lacks one of: ${TARGETS[*]}" >&2; exit 1; }
echo "llama.cpp built in $(( $(date +%s) - start )) s: $(cd "$BIN" && pwd)"
