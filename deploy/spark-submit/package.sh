#!/usr/bin/env bash
# Pack the pinned stack, the patched Horovod wheel and seglib into one relocatable venv archive that
# executors unpack (spark-submit --archives ARCHIVE#environment; submit.sh does it via SEG_ENV_ARCHIVE).
#
#   deploy/spark-submit/package.sh [OUTPUT]        default: dist/seglib-env.tar.gz
#
# Build it on the same OS and CPU architecture as the executors. It runs scripts/setup.sh first, which
# builds (or reuses) the Horovod wheel; seglib goes in as a regular (not editable) install, which
# venv-pack requires.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
output="${1:-$repo/dist/seglib-env.tar.gz}"
"$repo/scripts/setup.sh"

python_bin="$("$repo/.venv/bin/python" -c 'import sys; print(sys._base_executable)')"
torch_version="$("$repo/.venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
# The wheel setup.sh built: its folder names the Horovod version and seglib's patch level.
setup_value() { sed -n "s/^$1=\"\([^\"]*\)\".*/\1/p" "$repo/scripts/setup.sh"; }
wheel="$(ls "${SEGLIB_CACHE:-$HOME/.cache/seglib}"/wheels/horovod-"$(setup_value horovod_version)-$(setup_value horovod_patches)"-torch-"$torch_version"-*/horovod-*.whl | head -1)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python_bin" -m venv "$work/env"
pip=("$work/env/bin/pip" install --quiet --disable-pip-version-check)
"${pip[@]}" -r "$repo/requirements/stack.txt"
"${pip[@]}" --no-deps "$wheel" "$repo"
"$work/env/bin/python" -c 'import horovod.torch, petastorm, seglib' # the archive must import what jobs use
"${pip[@]}" venv-pack==0.2.0
mkdir -p "$(dirname "$output")"
"$work/env/bin/venv-pack" --prefix "$work/env" --output "$output" --force --quiet
echo "packed $(du -h "$output" | cut -f1) into $output"
