#!/usr/bin/env bash
# Installs what the tests and the demo need, only when it is missing:
# Deno from npm, and Debian's libpcap, tcpdump, tshark, iproute2, openssl, ruby through apt (root).
#   install_deps.sh [DENO_VERSION] [bench]
# "bench" adds openssh-server: only bench/e2e.ts needs it (its baseline is tcpdump over ssh; the
# bench starts its own sshd in a lab namespace, never the system's).
set -euo pipefail
want_deno="${1:-2.9.6}"
for_bench="${2:-}"

if ! command -v deno >/dev/null 2>&1 || [[ "$(deno --version | head -1)" != "deno ${want_deno} "* ]]; then
  echo "installing Deno ${want_deno} from npm" >&2
  npm install -g "deno@${want_deno}" >&2
fi

missing=()
[[ -e /usr/lib/x86_64-linux-gnu/libpcap.so.0.8 || -n "$(ldconfig -p 2>/dev/null | grep libpcap.so.0.8)" ]] ||
  missing+=(libpcap0.8)
command -v tcpdump >/dev/null || missing+=(tcpdump)
command -v tshark >/dev/null || missing+=(tshark)
command -v ip >/dev/null || missing+=(iproute2)
command -v openssl >/dev/null || missing+=(openssl)
command -v ruby >/dev/null || missing+=(ruby)
command -v gcc >/dev/null || missing+=(gcc)
command -v python3 >/dev/null || missing+=(python3)
command -v taskset >/dev/null || missing+=(util-linux)
if [[ "$for_bench" == bench ]]; then
  [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
  command -v ssh >/dev/null || missing+=(openssh-client)
fi

if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    echo "missing Debian packages: ${missing[*]}; install them (sudo apt-get install ${missing[*]})" \
      "or run as root so this script can" >&2
    exit 1
  fi
fi
