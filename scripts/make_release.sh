#!/bin/sh
# `make release`: compiles pcap (build.sh, which needs DENORT_BIN or a cached denort) and writes
# dist/release/, a copy of release/ with the executable as the blob pcap/pcap-linux-amd64,
# ready for `bosh create-release --tarball`. Without a denort it stops before writing anything.
set -eu
cd "$(dirname "$0")/.."
out="${RELEASE_OUT:-dist/release}"
if ! sh build.sh; then
  echo "release: no release directory written ($out): the executable could not be compiled (see above)" >&2
  exit 1
fi
blob=pcap/pcap-linux-amd64
rm -rf "$out"
mkdir -p "$out/blobs/pcap"
cp -R release/config release/jobs release/packages "$out/"
cp dist/pcap "$out/blobs/$blob"
version=$(dist/pcap version | cut -d' ' -f2)
size=$(wc -c <"$out/blobs/$blob" | tr -d ' ')
sha=$(sha256sum "$out/blobs/$blob" | cut -d' ' -f1)
# A local blob (no object_id yet), as `bosh add-blob` records it.
cat >"$out/config/blobs.yml" <<YAML
$blob:
  size: $size
  sha: sha256:$sha
YAML
echo "release directory $out is ready:"
echo "  (cd $out && bosh create-release --name pcap --version $version --tarball pcap-$version.tgz --force)"
