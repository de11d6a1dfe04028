#!/usr/bin/env bash
# `make symbol-order`: regenerates controller/symbol-order.txt, the order the release link lays
# kaws' functions out in (controller/build.rs, docs/performance.md "Code pages").
#
# Runs the quick bench (start-up, every kind's creates, steady resyncs, a population of paused
# objects) against an unstripped release kaws under callgrind, dumping each kaws' profile every
# 2 s, and lists the functions that ran in the order they first ran. Run it after a toolchain
# or dependency update (the names carry hashes of both; names a build no longer has are
# skipped at link time, so a stale list costs memory, not correctness). Needs valgrind
# (`apt-get install valgrind`); ~15 minutes, most of it the release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
  { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }

cargo=${CARGO:-cargo}
target=${CARGO_TARGET_DIR:-target}
work=$target/symbol-order
rm -rf "$work" && mkdir -p "$work/profiles"
work=$(cd "$work" && pwd)

# The same selection as `make bench` (other selections build the SDKs with other features,
# whose symbols then carry other hashes), then kaws relinked with its symbols.
$cargo build --release --locked -p kaws --bin kaws -p kaws-sdk-loop --bin kaws-sdk-loop
cp "$target/release/kaws-sdk-loop" "$work/"
$cargo rustc --release --locked -p kaws --bin kaws -- -C strip=none
cp "$target/release/kaws" "$work/kaws.bin"
$cargo build --workspace --all-targets

# What the bench starts as kaws: callgrind in the background, so that the bench killing this
# script leaves callgrind running until the reaper below asks it to stop (a killed callgrind
# writes nothing).
cat >"$work/kaws" <<WRAPPER
#!/usr/bin/env bash
valgrind -q --tool=callgrind --callgrind-out-file="$work/profiles/cg.%p" --dump-line=no \\
  --dump-instr=no --compress-strings=no --compress-pos=no --demangle=no "$work/kaws.bin" "\$@" &
echo "\$\$ \$!" >>"$work/children"
wait
WRAPPER
chmod +x "$work/kaws"
touch "$work/children"

# Whether process $1 is still one of the callgrind'ed kaws (a PID can be reused).
profiled() { grep -qs "kaws.bin" "/proc/$1/cmdline"; }

# Every 2 s: dump the profile of each running kaws; stop (SIGTERM) those whose wrapper is gone.
(
  while true; do
    sleep 2
    while read -r wrapper child; do
      profiled "$child" || continue
      if kill -0 "$wrapper" 2>/dev/null; then
        callgrind_control -d "$child" >/dev/null 2>&1 || true
      else
        kill -TERM "$child" 2>/dev/null || true
      fi
    done <"$work/children"
  done
) &
loop=$!
# On any exit (a failed bench, Ctrl-C) no callgrind'ed kaws is left running.
stop_all() {
  kill "$loop" 2>/dev/null || true
  while read -r _wrapper child; do
    if profiled "$child"; then kill -TERM "$child" 2>/dev/null || true; fi
  done <"$work/children"
}
trap stop_all EXIT

KAWS_BINARY="$work/kaws" "$target/debug/examples/bench" | tee "$work/bench.log"

# Wait for every callgrind to write its last profile.
for _ in $(seq 120); do
  running=0
  while read -r _wrapper child; do
    if profiled "$child"; then running=1; fi
  done <"$work/children"
  [ $running = 0 ] && break
  sleep 1
done

profiles=()
while read -r _wrapper child; do
  while IFS= read -r dump; do profiles+=("$dump"); done < <(ls "$work/profiles/cg.$child".* 2>/dev/null | sort -V)
  [ -e "$work/profiles/cg.$child" ] && profiles+=("$work/profiles/cg.$child")
done <"$work/children"
python3 scripts/symbol_order.py "$work/kaws.bin" "${profiles[@]}" >controller/symbol-order.txt
echo "controller/symbol-order.txt: $(wc -l <controller/symbol-order.txt) functions"
