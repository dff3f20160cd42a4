#!/usr/bin/env bash
# Runs the scale benchmark (see bench/README.md): starts `cairn serve` on a fresh data
# directory with the config below (or the one given), seeds it step by step and prints the
# table. Usage: bench/scale/run.sh CAIRN_BINARY [cairn-scale flags...]
#   e.g. bench/scale/run.sh target/release/cairn --steps 10000,100000,1000000
# DIR=<a directory an earlier run left> reuses its data and config (with --seeded TAGS).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cairn=$(realpath "${1:?usage: run.sh CAIRN_BINARY [cairn-scale flags...]}")
shift
bench="$here/target/release/cairn-scale"
[ -x "$bench" ] || cargo build --release --manifest-path "$here/Cargo.toml"
port=${PORT:-5078}
if [ -n "${DIR:-}" ]; then
    dir=$DIR
    port=$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$dir/cairn.toml")
else
dir=$(mktemp -d /tmp/cairn-scale.XXXXXX)
cat > "$dir/cairn.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
data_dir = "$dir/data"
[log]
level = "warn"
[gc]
schedule = "0s"          # the bench runs one GC pass itself
[retention]
schedule = "0s"          # plans only: nothing is applied
[[retention.policies]]
repositories = "scale/**"
keep_last = 6
untagged_grace = "24h"
TOML
fi
"$cairn" serve --config "$dir/cairn.toml" > "$dir/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/v2/" > /dev/null && break
    sleep 0.1
done
echo "data: $dir (remove it when done)"
"$bench" --url "http://127.0.0.1:$port" --pid "$pid" --cairn "$cairn" --config "$dir/cairn.toml" "$@"
