#!/usr/bin/env bash
# The GPU check, sized for a short GPU slot: the CUDA tests first (fail fast), then the whole
# suite, then the GPU benchmarks, on a machine with a CUDA GPU and a system python3 that has
# torch (CUDA build), triton and pytest; no virtualenv needed.
#
#   bash bench/gpu_check.sh                 # from anywhere; writes to ${OUT:-/tmp/out}
#
# If a folder wheels/ exists in the repository root (for the benchmark peers, which such a
# machine lacks: `pip download --no-deps -d wheels spikingjelly==2.0.0 snntorch==1.0.0
# loguru==0.7.3` on a machine with PyPI), its wheels are installed with --no-index --no-deps
# into a --target folder put on PYTHONPATH (unzipped there if pip is missing).
#
# Parts, in this order, each under `timeout` (limits in seconds; set the variable to change
# one). The limits add up to 420 s, 7 minutes (tests/test_bench.py checks the sum):
#   wheels      WHEELS_S      install wheels/*.whl (when there are any)
#   env         ENV_S         pytest plugins, triton, python, torch, CUDA, GPU (nvidia-smi)
#   cuda_tests  CUDA_TESTS_S  the CUDA tests (`bench/gpu.py --list-cuda-tests`: those that skip
#                             without CUDA, those whose id or source names CUDA, e.g. the
#                             Triton checks), -n 4 with pytest-xdist, -rfE --tb=short
#   suite       SUITE_S       the whole suite, -n 8 with pytest-xdist
#   bench       BENCH_S       bench/run.py --device cuda --only gpu gpu_compile; the benchmarks
#                             read $BENCH_DEADLINE (40 s before the limit) and skip what they
#                             would not finish (gpu_compile, last, compiles a model only with
#                             60 s to spare: give BENCH_S=300 to see its rows)
# Both pytest runs get --timeout=120 (per test) when pytest-timeout is installed.
#
# Output, all under $OUT (7 files):
#   env.txt         the wheels' install log, versions, nvidia-smi
#   cuda_tests.txt  the CUDA tests' node ids, then pytest's output (tracebacks --tb=short)
#   suite.txt       the whole suite's pytest output
#   bench.json      run.py's JSON document, rewritten after each suite
#   bench.txt       its tables and goal lines
#   bench.log       its stderr (progress, tracebacks)
#   summary.txt     each part's exit status and time, pytest's result line and failures,
#                   every goal line
# The exit status is 0 when every part exited 0 (124: a part ran out of time).
set -u
cd "$(dirname "$0")/.."
export OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
export PY="${PYTHON:-python3}"
WHEELS_S="${WHEELS_S:-15}"
ENV_S="${ENV_S:-30}"
CUDA_TESTS_S="${CUDA_TESTS_S:-100}"
SUITE_S="${SUITE_S:-125}"
BENCH_S="${BENCH_S:-150}"
export WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
: > "$OUT/summary.txt"
: > "$OUT/env.txt"

# a part: name, seconds, a function exported to `bash -c`; it ends within its limit (the
# SIGKILL 5 s after the SIGTERM included), and its exit code goes to the summary
status=0
part() {
    local name="$1" secs="$2" fn="$3"
    local t0=$SECONDS term=$(( secs > 10 ? secs - 5 : secs ))
    BENCH_DEADLINE=$(( $(date +%s) + secs - 40 )) timeout -k 5 "$term" bash -c "$fn"
    local rc=$?
    echo "$name: exit $rc after $(( SECONDS - t0 )) s (limit $secs s)" >> "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || status=1
}

# pytest's result line and its FAILED/ERROR lines, into the summary
pytest_summary() {
    local line
    line=$(grep -E '[0-9]+ (passed|failed|errors?|skipped|deselected)|no tests ran' "$1" | tail -n 1)
    echo "  ${line:-no result line (cut off by the time limit?)}" >> "$OUT/summary.txt"
    grep -E '^(FAILED|ERROR) ' "$1" | head -n 40 | sed 's/^/  /' >> "$OUT/summary.txt"
}

# -- wheels, env ----------------------------------------------------------------------------------
wheels() {
    "$PY" -m pip install -q --no-index --no-deps --target "$WHEELS" wheels/*.whl && return 0
    echo "pip install failed; unzipping the wheels instead"
    for w in wheels/*.whl; do "$PY" -m zipfile -e "$w" "$WHEELS" || return 1; done
}
env_info() {
    "$PY" -c 'import sys
from importlib.metadata import version
print("python", sys.version.split()[0], flush=True)
for name in ("pytest", "pytest-xdist", "pytest-timeout", "triton", "spikingjelly", "snntorch",
             "loguru"):
    try:
        print(name, version(name), flush=True)
    except Exception as e:
        print(name, "missing:", type(e).__name__, flush=True)
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available",
      torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))'
    nvidia-smi
}
export -f wheels env_info
{
    echo "date: $(date -u +%FT%TZ)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) changed files"
} >> "$OUT/env.txt"
if compgen -G "wheels/*.whl" > /dev/null; then
    export WHEELS="${TMPDIR:-/tmp}/multispike-wheels"
    mkdir -p "$WHEELS"
    echo "wheels: $(ls wheels/*.whl | tr '\n' ' ')-> $WHEELS" >> "$OUT/env.txt"
    part wheels "$WHEELS_S" wheels >> "$OUT/env.txt" 2>&1
    export PYTHONPATH="$PYTHONPATH:$WHEELS"
else
    echo "wheels: none (no wheels/*.whl)" >> "$OUT/summary.txt"
fi
part env "$ENV_S" env_info >> "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# pytest-xdist and pytest-timeout, if env_info found them
export CUDA_FLAGS="" SUITE_FLAGS=""
if grep -q '^pytest-xdist [0-9]' "$OUT/env.txt"; then
    CUDA_FLAGS="-n 4"
    SUITE_FLAGS="-n 8"
fi
if grep -q '^pytest-timeout [0-9]' "$OUT/env.txt"; then
    CUDA_FLAGS="$CUDA_FLAGS --timeout=120"
    SUITE_FLAGS="$SUITE_FLAGS --timeout=120"
fi

# -- the CUDA tests, then the whole suite -------------------------------------------------------
cuda_tests() {
    "$PY" bench/gpu.py --list-cuda-tests tests > "$WORK/cuda_ids"
    mapfile -t ids < "$WORK/cuda_ids"
    echo "${#ids[@]} CUDA tests (bench/gpu.py --list-cuda-tests):"
    printf '  %s\n' "${ids[@]}"
    [ "${#ids[@]}" -gt 0 ] || { echo "no CUDA test collected"; return 5; }
    # shellcheck disable=SC2086 # CUDA_FLAGS: words
    "$PY" -m pytest -q -rfE --tb=short -p no:cacheprovider --durations=15 $CUDA_FLAGS "${ids[@]}"
}
suite() {
    # shellcheck disable=SC2086 # SUITE_FLAGS: words
    "$PY" -m pytest -q -rfE --tb=short -p no:cacheprovider --durations=15 $SUITE_FLAGS tests
}
export -f cuda_tests suite
part cuda_tests "$CUDA_TESTS_S" cuda_tests > "$OUT/cuda_tests.txt" 2>&1
pytest_summary "$OUT/cuda_tests.txt"
tail -n 25 "$OUT/cuda_tests.txt"
part suite "$SUITE_S" suite > "$OUT/suite.txt" 2>&1
pytest_summary "$OUT/suite.txt"
tail -n 25 "$OUT/suite.txt"

# -- the benchmarks -------------------------------------------------------------------------------
bench() {
    "$PY" bench/run.py --device cuda --only gpu gpu_compile --json-out "$OUT/bench.json"
}
export -f bench
part bench "$BENCH_S" bench > "$OUT/bench.txt" 2> "$OUT/bench.log"
[ -s "$OUT/bench.txt" ] || tail -n 30 "$OUT/bench.log"
{
    grep -h '^goal:\|^guard:\|^error:\|failed:' "$OUT/bench.txt"
    grep -h '^\[gpu: .*snn/(T\*ann)\|^\[gpu: train e2e' "$OUT/bench.log"
} >> "$OUT/summary.txt"
cat "$OUT/bench.txt"
echo
cat "$OUT/summary.txt"
exit $status
