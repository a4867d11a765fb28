#!/usr/bin/env bash
# Builds the GPU machine's binaries here, where the CUDA toolkit compiles and links them without a GPU, so that a
# device call can carry them instead of building there: a build takes 80-150 s of a session's 30 device minutes.
#
#   scripts/local_build.sh [REF_COMMIT]
#
# Builds tpq_cuda_tests and tpq_bench of the working tree into build-local/ and, with REF_COMMIT, tpq_bench of that
# commit into build-ref/ (from a git worktree, /tmp/tpq_ref_src). Both folders match /build*/, which git ignores, and sit
# at the absolute paths the device uses (it runs a copy of this checkout at the same root), so paths compiled into
# the binaries (the test fixtures) hold there. Same configuration as gpu_env.sh (Release, CUDA_ARCHS, default 90a).
# A device call then carries the binaries (well under the 64 MiB a call may carry):
#   carry   ["build-local/tests/tpq_cuda_tests", "build-local/benchmarks/tpq_bench", "build-ref/benchmarks/tpq_bench"]
#   command build-local/tests/tpq_cuda_tests --gtest_filter='Fp8*' &&
#           AB_NEW_BENCH=build-local/benchmarks/tpq_bench AB_REF_BENCH=build-ref/benchmarks/tpq_bench \
#             OUT=$OUT scripts/gpu_ab.sh - --format fp8 --m 1,8
# The binaries link the CUDA 13, NCCL and fmt 9 shared libraries, which the GPU machine has; nothing here is built
# for the host compiler there (g++ 13 there, this machine's here), which changes no device code.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
archs="${CUDA_ARCHS:-90a}"
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

# build_tree SRC BUILD TARGETS...: configures BUILD from SRC as the GPU machine does and builds TARGETS.
build_tree() {
  local src="$1" dir="$2"
  shift 2
  mkdir -p "$dir"
  cmake -S "$src" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTPQ_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$archs" \
    >"$dir/configure.log" 2>&1 || { tail -30 "$dir/configure.log"; return 1; }
  ninja -C "$dir" "$@"
}

build_tree "$root" "$root/build-local" tests/tpq_cuda_tests benchmarks/tpq_bench
echo "built: build-local/tests/tpq_cuda_tests build-local/benchmarks/tpq_bench"

if [ $# -ge 1 ]; then
  commit="$(git -C "$root" rev-parse --verify "$1^{commit}")"
  # One worktree for every reference commit, so that build-ref (whose cache names its source) stays incremental.
  src="/tmp/tpq_ref_src"
  if [ -d "$src" ]; then
    git -C "$src" checkout -q --detach "$commit"
  else
    git -C "$root" worktree prune
    git -C "$root" worktree add --detach "$src" "$commit" >/dev/null
  fi
  build_tree "$src" "$root/build-ref" benchmarks/tpq_bench
  echo "built: build-ref/benchmarks/tpq_bench (${commit:0:12})"
fi
