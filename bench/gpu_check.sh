#!/usr/bin/env bash
# The GPU check: CUDA tests, then the GPU benchmarks, on a machine with a CUDA GPU and a
# system python3 that has torch (CUDA build), triton and pytest; no virtualenv needed.
#
#   bash bench/gpu_check.sh                 # from the repository root; writes to ${OUT:-/tmp/out}
#
# If a folder wheels/ exists in the repository root (for the benchmark peers, which such a
# machine lacks: `pip download --no-deps -d wheels spikingjelly==2.0.0 snntorch==1.0.0
# loguru==0.7.3` on a machine with PyPI), its wheels are installed with --no-index --no-deps
# into a --target folder put on PYTHONPATH (unzipped there if pip is missing).
#
# Each part runs under `timeout`, so the whole script fits in about 8 minutes; override the
# limits (seconds) with PYTEST_S, BENCH_S, COMPILE_S. Output, all under $OUT:
#   env.txt              python, torch, CUDA, triton, GPU (nvidia-smi)
#   pytest.txt           pytest -q -x tests -k "cuda or kernels or compile or devices or bench"
#   bench_cuda.json/.txt/.log          run.py --device cuda --only gpu (JSON, tables, stderr)
#   bench_cuda_compile.json/.txt/.log  run.py --device cuda --only gpu_compile
#   summary.txt          exit codes and every goal line
# The exit status is 0 when every part exited 0.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
PYTEST_S="${PYTEST_S:-170}"
BENCH_S="${BENCH_S:-200}"
COMPILE_S="${COMPILE_S:-110}"
PY="${PYTHON:-python3}"

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "wheels/*.whl" > /dev/null; then
    TARGET="${TMPDIR:-/tmp}/multispike-wheels"
    mkdir -p "$TARGET"
    if ! "$PY" -m pip install -q --no-index --no-deps --target "$TARGET" wheels/*.whl \
            > "$OUT/wheels.txt" 2>&1; then
        echo "pip install failed; unzipping the wheels instead" >> "$OUT/wheels.txt"
        for w in wheels/*.whl; do "$PY" -m zipfile -e "$w" "$TARGET" >> "$OUT/wheels.txt" 2>&1; done
    fi
    export PYTHONPATH="$PYTHONPATH:$TARGET"
fi

{
    echo "date: $(date -u +%FT%TZ)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) changed files"
    timeout 60 "$PY" -c 'import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
for name in ("triton", "spikingjelly", "snntorch", "loguru", "pytest"):
    try:
        from importlib.metadata import version
        print(name, version(name))
    except Exception as e:
        print(name, "missing:", type(e).__name__)'
    timeout 20 nvidia-smi
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# a part: name, seconds, command...; its exit code goes to the summary (124: out of time)
status=0
part() {
    local name="$1" secs="$2"
    shift 2
    local t0=$SECONDS
    BENCH_DEADLINE=$(( $(date +%s) + secs - 40 )) timeout -k 10 "$secs" "$@"
    local rc=$?
    echo "$name: exit $rc after $(( SECONDS - t0 )) s (limit $secs s)" >> "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || status=1
}
: > "$OUT/summary.txt"

part pytest "$PYTEST_S" bash -c "$PY -m pytest -q -x -p no:cacheprovider --durations=15 tests \
    -k 'cuda or kernels or compile or devices or bench' > '$OUT/pytest.txt' 2>&1"
tail -n 15 "$OUT/pytest.txt"

for suite in gpu gpu_compile; do
    name=bench_cuda
    [ "$suite" = gpu ] || name=bench_cuda_compile
    secs=$BENCH_S
    [ "$suite" = gpu ] || secs=$COMPILE_S
    part "$name" "$secs" bash -c "$PY bench/run.py --device cuda --only $suite --json \
        > '$OUT/$name.json' 2> '$OUT/$name.log'"
    if [ -s "$OUT/$name.json" ]; then
        "$PY" bench/run.py --report "$OUT/$name.json" > "$OUT/$name.txt" 2>&1
    else
        tail -n 30 "$OUT/$name.log"
    fi
done

{
    grep -h "^goal:\|^error:\|failed:" "$OUT"/bench_cuda*.txt 2>/dev/null
    grep -h "^\[gpu: .*snn/(T\*ann)" "$OUT"/bench_cuda*.log 2>/dev/null
} >> "$OUT/summary.txt"
cat "$OUT"/bench_cuda*.txt 2>/dev/null
echo
cat "$OUT/summary.txt"
exit $status
