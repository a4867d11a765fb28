#!/usr/bin/env bash
# The one script for the GPU machine: configure with CUDA, build, run every test (cpu, cuda, mpi, consumer,
# fuzz) and the benchmark, and print a short summary last (the tool returns only the tail of the output).
#
#   OUT=/some/dir scripts/gpu_run.sh        # $OUT defaults to ./gpu_out; its files come back to the caller
#
# Files in $OUT: build.log, ctest.log, bench.txt, bench.json, bench_nopdl.txt (unquant at M=1,8 with
# programmatic dependent launch off, to see what it buys), summary.txt.
# Knobs (environment): BUILD_DIR (default build-gpu), CUDA_ARCHS (default 90a), TPQ_CTEST_ARGS (extra ctest
# arguments, e.g. "-L cuda"), TPQ_BENCH_ARGS (extra tpq_bench arguments, e.g. "--m 1,8 --shapes llama8b"; "--floor"
# adds the stream-floor column), TPQ_SKIP_TESTS=1, TPQ_SKIP_BENCH=1, TPQ_SKIP_NOPDL=1.
# Exit status: non-zero when the build, a test or the benchmark failed; the benchmark runs regardless of tests.
set -uo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"

echo "== GPU =="
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv 2>&1 || echo "(nvidia-smi failed)"
echo "== tools =="
{ nvcc --version | tail -1; cmake --version | head -1; g++ --version | head -1; } 2>&1
echo "root=$root build=$build OUT=$OUT jobs=$jobs archs=$archs"

status=0
build_ok=1

# ---- configure + build ----
echo "== build =="
start=$(date +%s)
if ! tpq_gpu_configure "$OUT/build.log"; then
  build_ok=0
  status=1
fi
if [ "$build_ok" = 1 ]; then
  # -k 0: build every target that can be built, so one broken file does not hide the others' results.
  if ! ninja -C "$build" -k 0 -j "$jobs" >>"$OUT/build.log" 2>&1; then
    echo "build FAILED (errors from build.log):"
    grep -E "FAILED:|error" "$OUT/build.log" | head -40
    status=1
  fi
fi
echo "build: $(( $(date +%s) - start )) s"

# ---- tests ----
tests_line="tests: not run"
if [ "${TPQ_SKIP_TESTS:-0}" != 1 ] && [ -f "$build/CTestTestfile.cmake" ]; then
  echo "== tests =="
  start=$(date +%s)
  # shellcheck disable=SC2086
  ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 600 ${TPQ_CTEST_ARGS:-} >"$OUT/ctest.log" 2>&1
  ctest_rc=$?
  [ $ctest_rc -ne 0 ] && status=1
  echo "ctest: rc=$ctest_rc, $(( $(date +%s) - start )) s"
  tests_line="$(grep -E "tests passed|No tests were found" "$OUT/ctest.log" | tail -1)"
fi

# ---- benchmark ----
bench="$build/benchmarks/tpq_bench"
if [ "${TPQ_SKIP_BENCH:-0}" != 1 ]; then
  echo "== benchmark =="
  if [ -x "$bench" ]; then
    start=$(date +%s)
    # shellcheck disable=SC2086
    "$bench" --json "$OUT/bench.json" ${TPQ_BENCH_ARGS:-} >"$OUT/bench.txt" 2>&1 || { echo "tpq_bench FAILED"; status=1; }
    echo "bench: $(( $(date +%s) - start )) s"
    if [ "${TPQ_SKIP_NOPDL:-0}" != 1 ]; then
      TPQ_NO_PDL=1 "$bench" --format unquant --m 1,8 >"$OUT/bench_nopdl.txt" 2>&1 || { echo "tpq_bench (no PDL) FAILED"; status=1; }
    fi
  else
    echo "no $bench (build failed?)" | tee "$OUT/bench.txt"
    status=1
  fi
fi

# ---- summary (last, so it is in the returned tail: benchmark first, then build and test counts) ----
{
  if [ -f "$OUT/bench.txt" ]; then
    echo
    echo "---- benchmark ($OUT/bench.txt) ----"
    cat "$OUT/bench.txt"
  fi
  if [ -f "$OUT/bench_nopdl.txt" ]; then
    echo "---- unquant with TPQ_NO_PDL=1 (programmatic dependent launch off) ----"
    grep -E "^  unquant|read bandwidth" "$OUT/bench_nopdl.txt"
  fi
  echo
  echo "================================ summary ================================"
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1
  echo "build: $([ "$build_ok" = 1 ] && ! grep -q "FAILED:" "$OUT/build.log" && echo ok || echo FAILED)"
  echo "$tests_line"
  if [ -f "$OUT/ctest.log" ]; then
    # Per-label counts: ctest -N -L <label> lists a label's tests; the log has each test's outcome.
    printf "  %-9s %6s %6s %6s %7s %7s\n" label total passed failed skipped not-run
    for label in cpu cuda mpi multigpu consumer fuzz tool; do
      names="$(ctest --test-dir "$build" -N -L "^${label}\$" 2>/dev/null | sed -n 's/^ *Test *#[0-9]*: \([^ ]*\).*/\1/p')"
      [ -z "$names" ] && continue
      total=0 passed=0 failed=0 skipped=0 absent=0
      while IFS= read -r name; do
        total=$((total + 1))
        line="$(grep -F " $name " "$OUT/ctest.log" | grep -E "Test +#" | tail -1)"
        case "$line" in
          "") absent=$((absent + 1)) ;;
          *Passed*) passed=$((passed + 1)) ;;
          *Skipped*|*"Not Run"*) skipped=$((skipped + 1)) ;;
          *) failed=$((failed + 1)) ;;
        esac
      done <<<"$names"
      printf "  %-9s %6d %6d %6d %7d %7d\n" "$label" "$total" "$passed" "$failed" "$skipped" "$absent"
    done
    if grep -q "The following tests FAILED" "$OUT/ctest.log"; then
      echo "failed tests:"
      sed -n '/The following tests FAILED/,$p' "$OUT/ctest.log" | grep -E "^\s+[0-9]+ - " | head -30
    fi
  fi
  echo "exit status: $status"
} | tee "$OUT/summary.txt"
exit $status
