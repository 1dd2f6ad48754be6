#!/bin/sh
# Compiles the single executable into dist/pcap (+ pcap-bosh, pcap-cf symlinks).
# `deno compile` needs the denort runtime. Deno downloads it on first use, which fails without
# network access; point DENORT_BIN at a local denort binary of the same Deno version instead.
set -eu
cd "$(dirname "$0")"
target=x86_64-unknown-linux-gnu
version=$(deno --version | head -1 | cut -d' ' -f2)
cache="${DENO_DIR:-$HOME/.cache/deno}/dl/release/v${version}/denort-${target}.zip"

if [ -n "${DENORT_BIN:-}" ]; then
  if [ ! -x "$DENORT_BIN" ]; then
    echo "build: DENORT_BIN=$DENORT_BIN is not an executable file; point it at denort ${version} for ${target}" >&2
    exit 1
  fi
elif [ ! -f "$cache" ]; then
  cat >&2 <<MSG
build: the Deno runtime 'denort' ${version} for ${target} is not available.
  deno compile would download it, and this machine cannot reach its download site.
  Set DENORT_BIN to a local denort binary of Deno ${version}, e.g.
    DENORT_BIN=/path/to/denort make build
MSG
  exit 1
fi

# The V8 flags every mode runs with (lib/v8_flags.ts); DENO_V8_FLAGS is ignored by a compiled binary.
v8flags=$(deno run --quiet lib/v8_flags.ts)
set -- # an empty list passes no --v8-flags at all, as the lab does (lib/v8_flags.ts v8FlagsArgs)
if [ -n "$v8flags" ]; then set -- --v8-flags="$v8flags"; fi
mkdir -p dist
deno compile --target "$target" --allow-all --no-prompt "$@" \
  --include agent/engine/capture_worker.ts \
  --include server/filter_compile_worker.ts \
  --output dist/pcap main.ts
ln -sf pcap dist/pcap-bosh
ln -sf pcap dist/pcap-cf
echo "built dist/pcap ($(du -h dist/pcap | cut -f1)) with links pcap-bosh and pcap-cf"
