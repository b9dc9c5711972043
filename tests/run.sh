#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then check and test it (extra arguments go to
# pytest).
#
# System tools some tests drive for real: a PostgreSQL server (scale-out tests start a throwaway cluster),
# the reference encoders cjpeg, cwebp, avifenc and cjxl, ImageMagick and Node.js with npm (preset exports;
# the sharp test installs sharp from npm into ~/.cache/optimizer-tests), exiftool (the metadata outputs
# keep, read by an independent reader), and Debian's chromium (HTML report).
#
# Then, in order, each failing the run on any finding: ruff (lint), ruff format --check, mypy (strict),
# the test suite, and, on a full run (no pytest arguments), the tuning and scale-out tests again on the
# oldest Optuna release pyproject.toml allows.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cjpeg >/dev/null 2>&1 || need+=(libjpeg-turbo-progs)
command -v cwebp >/dev/null 2>&1 || need+=(webp)
command -v avifenc >/dev/null 2>&1 || need+=(libavif-bin)
command -v cjxl >/dev/null 2>&1 || need+=(libjxl-tools)
command -v exiftool >/dev/null 2>&1 || need+=(libimage-exiftool-perl)
# Debian's ImageMagick at /usr/bin/convert (the export tests use it): another `convert` earlier on PATH does
# not count.
/usr/bin/convert -version 2>/dev/null | grep -q ImageMagick || need+=(imagemagick)
command -v npm >/dev/null 2>&1 || need+=(npm)
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
py=.venv/bin/python
$py -m pip install -q -e '.[dev]'

echo "lint, format and types"
$py -m ruff check optimizer tests benchmarks
$py -m ruff format --check optimizer tests benchmarks
$py -m mypy

if [ $# -gt 0 ]; then
  exec $py -m pytest "$@"
fi
$py -m pytest

floor=$(sed -n 's/.*"optuna>=\([0-9.]*\),.*/\1/p' pyproject.toml)
target="$PWD/.ci-floor/optuna-$floor"
[ -d "$target/optuna" ] || $py -m pip install -q --no-deps --target "$target" "optuna==$floor"
echo "tuning and scale-out tests on Optuna $floor (the floor of pyproject.toml's range)"
PYTHONPATH="$target" OPTIMIZER_EXPECT_OPTUNA="$floor" \
  $py -m pytest -q -p no:cacheprovider tests/test_tuning.py tests/test_workers.py tests/test_presets.py
