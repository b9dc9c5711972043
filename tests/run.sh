#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it (extra arguments go to pytest).
#
# System tools some tests drive for real: a PostgreSQL server (scale-out tests start a throwaway cluster),
# the reference encoders cjpeg, cwebp, avifenc and cjxl (preset exports), and Debian's chromium (HTML report).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cjpeg >/dev/null 2>&1 || need+=(libjpeg-turbo-progs)
command -v cwebp >/dev/null 2>&1 || need+=(webp)
command -v avifenc >/dev/null 2>&1 || need+=(libavif-bin)
command -v cjxl >/dev/null 2>&1 || need+=(libjxl-tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing system packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e '.[dev]'
exec .venv/bin/python -m pytest "$@"
