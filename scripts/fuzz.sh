#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for a bounded time, each on a COPY of its
# committed seed corpus (fuzz/corpus/<target>), so a run never changes the tree. Fails if any
# target finds a crash, a failed invariant, a leak, a timeout or runs out of memory, and prints
# the reproducer and the command that replays it.
#
#   scripts/fuzz.sh                                  # every target, 20 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh archive_extract # one target for longer
#
# Needs the nightly toolchain and cargo-fuzz (scripts/install-test-deps.sh installs both). The
# instrumented build has its own target directory (FUZZ_TARGET_DIR), kept between runs.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
rss_limit_mb="${FUZZ_RSS_LIMIT_MB:-2048}"
target_dir="${FUZZ_TARGET_DIR:-$HOME/.cache/certus-assurance/fuzz-target}"
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Longest input per target: room for the seeds and some growth, small enough to stay fast.
max_len() {
  case "$1" in
    archive_extract) echo 65536 ;;
    git_url) echo 4096 ;;
    *) echo 16384 ;;
  esac
}
dict() {
  case "$1" in
    submission_json | tool_reports) echo fuzz/dicts/json.dict ;;
    *) [ -f "fuzz/dicts/$1.dict" ] && echo "fuzz/dicts/$1.dict" ;;
  esac
}

echo "== cargo fuzz build (target dir $target_dir)"
cargo +nightly fuzz build --target-dir "$target_dir"

work="$(mktemp -d)"
# An interrupted run leaves nothing behind; a failed one keeps its logs and reproducers.
trap 'rm -rf "$work"; exit 130' INT TERM
failed=()
for t in "${targets[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { echo "no seed corpus fuzz/corpus/$t" >&2; exit 1; }
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  cp -R "fuzz/corpus/$t/." "$work/corpus/$t/"
  args=(-max_total_time="$seconds" -rss_limit_mb="$rss_limit_mb" -max_len="$(max_len "$t")"
    -timeout=10 -print_final_stats=1 -artifact_prefix="$work/artifacts/$t/")
  d="$(dict "$t" || true)"
  [ -n "$d" ] && args+=(-dict="$d")
  echo "== fuzz $t for ${seconds}s"
  if ! cargo +nightly fuzz run --target-dir "$target_dir" "$t" "$work/corpus/$t" -- "${args[@]}" \
      >"$work/$t.log" 2>&1; then
    failed+=("$t")
    tail -40 "$work/$t.log"
    for a in "$work/artifacts/$t"/*; do
      [ -e "$a" ] || continue
      echo "reproducer: $a"
      echo "  replay: cargo +nightly fuzz run --target-dir $target_dir $t $a"
      echo "  minimise: cargo +nightly fuzz tmin --target-dir $target_dir $t $a"
    done
  else
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$work/$t.log" | tr '\n' ' '
    echo
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]} (logs and reproducers under $work)" >&2
  exit 1
fi
rm -rf "$work"
echo "fuzzing: ${#targets[@]} targets, ${seconds}s each, nothing found"
