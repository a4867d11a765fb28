#!/usr/bin/env bash
# One kernel launch of tpq_bench under Nsight Compute, for the GPU machine: where the warps of a kernel wait.
# Builds tpq_bench (the configure step of gpu_env.sh), profiles the 6th launch whose name matches REGEX with the
# full section set, and prints the warp-state and scheduler sections plus the SASS instructions with the most
# sampled stalls (top 40, with the sampled stall reasons where the report names them).
#
#   OUT=/some/dir scripts/gpu_profile.sh REGEX [tpq_bench arguments...]
#   e.g. scripts/gpu_profile.sh woq_gemv_grouped --format gptq4_g128 --m 1 --n 28672 --k 4096
#
# TPQ_BENCH=path profiles a tpq_bench built elsewhere (scripts/local_build.sh, carried) instead of building one.
# Files in $OUT: build.log, ncu.log, profile.ncu-rep (open it in the Nsight Compute GUI), details.txt,
# source.csv (every SASS instruction with its metrics), top_stalls.txt; with TPQ_PROFILE_SLIM=1 only details.txt
# and top_stalls.txt stay (the device tool returns at most 8 files).
# The column names of ncu's source page differ between Nsight Compute versions: when the stall-sampling column is not
# found, the table's header is printed instead (the H200 machine's ncu has it). The SASS's scoreboard control bits
# (which loads a wait covers) are not in the report: decode them from `cuobjdump -sass` (results README, s4).
set -uo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"

if [ $# -lt 1 ]; then
  echo "usage: OUT=dir $0 REGEX [tpq_bench arguments...]" >&2
  exit 2
fi
regex="$1"
shift

bench="${TPQ_BENCH:-}"
if [ -z "$bench" ]; then
  tpq_gpu_configure "$OUT/cfg.log" || exit 1
  if ! ninja -C "$build" tpq_bench >"$OUT/build.log" 2>&1; then
    echo "build FAILED (tail of $OUT/build.log):"
    tail -30 "$OUT/build.log"
    exit 1
  fi
  bench="$build/benchmarks/tpq_bench"
fi

# Two graph replays of two forwards keep the run short; the clocks stay as the benchmark sees them.
if ! ncu --clock-control none -k "regex:$regex" --launch-skip 5 --launch-count 1 --set full --import-source no \
    -f -o "$OUT/profile" "$bench" --iters 2 --graph-calls 2 "$@" >"$OUT/ncu.log" 2>&1; then
  echo "ncu FAILED (tail of $OUT/ncu.log):"
  tail -30 "$OUT/ncu.log"
  exit 1
fi
ncu -i "$OUT/profile.ncu-rep" --page details >"$OUT/details.txt" 2>&1
ncu -i "$OUT/profile.ncu-rep" --page source --csv --print-source sass >"$OUT/source.csv" 2>&1

echo "== $(grep -m1 -E '^  [A-Za-z_].*\(' "$OUT/details.txt" | sed 's/^ *//' | cut -c1-150)"
grep -E "Duration|DRAM Throughput|Issued Warp Per Scheduler|No Eligible|Active Warps Per Scheduler|Eligible Warps|Warp Cycles Per Issued|Registers Per Thread|Achieved Occupancy|Grid Size|Waves Per SM" \
  "$OUT/details.txt"

python3 - "$OUT/source.csv" >"$OUT/top_stalls.txt" <<'EOF'
import csv, sys

def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None

with open(sys.argv[1], newline="") as f:
    rows = [r for r in csv.reader(f) if r]
# The header is the first row that names a source column; anything before it is ncu's own output.
start = next((i for i, r in enumerate(rows) if "Source" in r), None)
if start is None:
    print("no source table in the report (ncu output follows)")
    for r in rows[:20]:
        print(",".join(r))
    sys.exit(0)
header, body = rows[start], rows[start + 1:]
source = header.index("Source")
address = next((i for i, h in enumerate(header) if "Address" in h), None)
samples = next((i for i, h in enumerate(header) if "Stall Sampling (All" in h), None)
if samples is None:
    print("no stall-sampling column; columns are:", header)
    sys.exit(0)
# Per-reason sample columns, where this ncu version names them.
reasons = [i for i, h in enumerate(header)
           if i != samples and ("stall" in h.lower() or "Stall" in h) and "Sampling" not in h]
total = sum(number(r[samples]) or 0.0 for r in body if len(r) > samples)
ranked = sorted((r for r in body if len(r) > samples and number(r[samples])), key=lambda r: -number(r[samples]))
print(f"{len(body)} SASS instructions, {total:.0f} stall samples; the 40 with the most:")
for r in ranked[:40]:
    share = 100.0 * number(r[samples]) / total if total else 0.0
    top = sorted(((number(r[i]) or 0.0, header[i]) for i in reasons if len(r) > i), reverse=True)[:3]
    why = ", ".join(f"{name} {value:.0f}" for value, name in top if value > 0)
    where = r[address] if address is not None else ""
    print(f"{share:5.1f}%  {where:>8}  {r[source][:70]:70}  {why}")
EOF
cat "$OUT/top_stalls.txt"

# The device tool brings back at most 8 files from $OUT: TPQ_PROFILE_SLIM=1 keeps only details.txt and
# top_stalls.txt (the report, the SASS table and the logs go), so a profile fits beside a run's other outputs.
if [ "${TPQ_PROFILE_SLIM:-0}" = 1 ]; then
  rm -f "$OUT/profile.ncu-rep" "$OUT/source.csv" "$OUT/build.log" "$OUT/cfg.log" "$OUT/ncu.log"
fi
