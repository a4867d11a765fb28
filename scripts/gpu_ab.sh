#!/usr/bin/env bash
# Same-run A/B for the GPU machine: tpq_bench of the working tree against tpq_bench of a reference tree, both built
# there and run alternately on the same GPU, so that the spread between lent machines cancels out. (Sixth
# session: the same code measured up to 18 % apart at decode sizes, and M = 4096 ratios up to 0.2 apart, between
# two H200 runs; comparing against a table recorded on another machine says little.)
#
#   here:   git archive <commit> -o ab_ref.tar                # the reference tree (ab_ref.tar is git-ignored)
#   device: OUT=dir scripts/gpu_ab.sh ab_ref.tar [tpq_bench arguments...]      (run's carry: ["ab_ref.tar"])
#           e.g. scripts/gpu_ab.sh ab_ref.tar --format fp8,fp8-block --m 1,8
#
# Each pass runs both benches with the same arguments, the working tree's first in odd passes and the reference's
# first in even ones (so neither side always runs on a warmer GPU); each row keeps its minimum time over the
# passes. Files in $OUT: ab.txt (the table: time of each side in us, % of the measured read bandwidth, ref/new > 1
# where the working tree is faster) and ab_raw.txt (every pass's rows).
# Knobs (environment): AB_PASSES (default 2), CUDA_ARCHS, BUILD_DIR (as gpu_env.sh), AB_REF_DIR (default
# /tmp/tpq_ab_ref: where the reference is unpacked and built).
# A switch instead of a reference tree: `AB_ENV=NAME scripts/gpu_ab.sh - [arguments...]` runs the working tree's
# bench with NAME=1 ("new") against the same bench with NAME=0 ("ref"); AB_NEW and AB_REF replace the 1 and the 0.
# Binaries built elsewhere (scripts/local_build.sh, carried to the device): AB_NEW_BENCH=path skips the working
# tree's build, AB_REF_BENCH=path the reference's (then the first argument is `-`).
set -uo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"

ab_env="${AB_ENV:-}"
new_bench="${AB_NEW_BENCH:-}"
ref_bench="${AB_REF_BENCH:-}"
if [ $# -lt 1 ] || { [ -z "$ab_env" ] && [ -z "$ref_bench" ] && [ ! -f "$1" ]; }; then
  echo "usage: OUT=dir $0 REF_TARBALL [tpq_bench arguments...]   (REF_TARBALL from git archive)" >&2
  exit 2
fi
for exe in "$new_bench" "$ref_bench"; do
  [ -z "$exe" ] || [ -x "$exe" ] || { echo "not an executable: $exe"; exit 2; }
done
[ -n "$ab_env" ] && [ -n "$ref_bench" ] && { echo "AB_ENV and AB_REF_BENCH exclude each other"; exit 2; }
tarball=""
[ -z "$ab_env" ] && [ -z "$ref_bench" ] && tarball="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
shift
ref="${AB_REF_DIR:-/tmp/tpq_ab_ref}"
passes="${AB_PASSES:-2}"

# The working tree's build; with a reference tree, both at once, the cores split between them.
half=$jobs
[ -n "$tarball" ] && [ -z "$new_bench" ] && half=$(( jobs > 1 ? jobs / 2 : 1 ))
new_pid=""
if [ -z "$new_bench" ]; then
  ( tpq_gpu_configure "$OUT/ab_build_new.log" >/dev/null &&
    ninja -C "$build" -j "$half" tpq_bench >>"$OUT/ab_build_new.log" 2>&1 ) &
  new_pid=$!
  new_bench="$build/benchmarks/tpq_bench"
fi
ref_pid=""
if [ -n "$tarball" ]; then
  rm -rf "$ref" && mkdir -p "$ref/src" || exit 1
  tar -xf "$tarball" -C "$ref/src" || { echo "cannot unpack $tarball"; exit 1; }
  ( cmake -S "$ref/src" -B "$ref/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTPQ_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$archs" >"$OUT/ab_build_ref.log" 2>&1 &&
    ninja -C "$ref/build" -j "$half" tpq_bench >>"$OUT/ab_build_ref.log" 2>&1 ) &
  ref_pid=$!
fi
failed=0
if [ -n "$new_pid" ]; then
  wait $new_pid || { echo "working tree: build FAILED"; tail -20 "$OUT/ab_build_new.log"; failed=1; }
fi
if [ -n "$ref_pid" ]; then
  wait $ref_pid || { echo "reference: build FAILED"; tail -20 "$OUT/ab_build_ref.log"; failed=1; }
  ref_bench="$ref/build/benchmarks/tpq_bench"
fi
[ $failed = 0 ] || exit 1
rm -f "$OUT/ab_build_new.log" "$OUT/ab_build_ref.log"

raw="$OUT/ab_raw.txt"
: >"$raw"
[ "$passes" -ge 1 ] 2>/dev/null || { echo "AB_PASSES must be a positive number, not '$passes'"; exit 2; }
for pass in $(seq 1 "$passes"); do
  sides="new ref"
  [ $((pass % 2)) = 0 ] && sides="ref new"
  for side in $sides; do
    exe="$new_bench"
    switch=()  # AB_ENV: the same bench, the switch on ("new") or off ("ref")
    if [ -n "$ab_env" ]; then
      switch=("$ab_env=$([ $side = new ] && echo "${AB_NEW:-1}" || echo "${AB_REF:-0}")")
    elif [ $side = ref ]; then
      exe="$ref_bench"
    fi
    echo "== $side pass $pass" >>"$raw"
    env "${switch[@]}" "$exe" "$@" >>"$raw" 2>&1 || { echo "$side tpq_bench FAILED (see $raw)"; exit 1; }
  done
done

python3 - "$raw" "$passes" <<'PY' | tee "$OUT/ab.txt"
import re, sys
rows, order, bw, side = {}, [], [], None
for line in open(sys.argv[1]):
    m = re.match(r"== (new|ref) pass", line)
    if m:
        side = m.group(1)
        continue
    if "measured read bandwidth" in line and side:
        bw.append(side + " " + line.split(":", 1)[1].split("(")[0].strip())
    f = line.split()
    # format shape M N K time TFLOP/s GB/s %BW ...
    if side is None or line.startswith("#") or len(f) < 9:
        continue
    try:
        t, pct = float(f[5]), float(f[8])
    except ValueError:
        continue
    key = tuple(f[:5])
    if key not in rows:
        rows[key] = {}
        order.append(key)
    best = rows[key].get(side)
    if best is None or t < best[0]:
        rows[key][side] = (t, pct)
if not order:
    sys.exit("no benchmark rows in " + sys.argv[1])
print(f"# same-run A/B, {sys.argv[2]} passes, minimum time per row; read bandwidth per bench start: {', '.join(bw)}")
print(f"# {'format':12s} {'shape':22s} {'M':>5s} {'new us (%BW)':>15s} {'ref us (%BW)':>15s}  ref/new")
for key in order:
    v = rows[key]
    if "new" not in v or "ref" not in v:
        print(f"  {key[0]:12s} {key[1]:22s} {key[2]:>5s}  only in {'new' if 'new' in v else 'ref'}")
        continue
    (tn, pn), (tr, pr) = v["new"], v["ref"]
    print(f"  {key[0]:12s} {key[1]:22s} {key[2]:>5s} {tn:8.2f} ({pn:4.1f}) {tr:8.2f} ({pr:4.1f})  {tr / tn:6.3f}")
PY
