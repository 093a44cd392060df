#!/usr/bin/env bash
# Fuzzes crowd's decoders with cargo-fuzz (libFuzzer) on the stable toolchain.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   # default: 300 s for each target
#
# Targets (proto/fuzz/fuzz_targets/):
#   report_validate  CrowdingReport bytes off the wire -> validation -> stream entry
#   entry_decode     stream entry bytes -> StoredReport -> estimator apply/estimate
#   train_state      committed TrainState bytes -> estimator apply/prune/estimate
#
# The sanitizer flags cargo-fuzz passes are nightly-only; RUSTC_BOOTSTRAP=1
# lets the stable compiler accept them. FUZZ_SANITIZER=none runs without
# AddressSanitizer (faster, still catches panics). Crashes are saved under
# proto/fuzz/artifacts/<target>/ and replayed with
# `cargo fuzz run <target> <file>`.
set -euo pipefail
cd "$(dirname "$0")/../proto/fuzz"

seconds="${1:-300}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(report_validate entry_decode train_state)

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"

for target in "${targets[@]}"; do
  echo "== $target: ${seconds}s, sanitizer $sanitizer"
  mkdir -p "corpus/$target"
  cargo fuzz run -O -s "$sanitizer" "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1
done
