#!/usr/bin/env bash
# Idempotent set-up of a seglib development or local-run environment.
#
#   scripts/setup.sh          venv with the pinned runtime stack, Horovod, seglib (editable)
#   scripts/setup.sh --dev    the same plus test and lint tools
#
# A second call reuses the venv (pip only checks the pins) and the cached Horovod wheel.
# Needs Python 3.11, Java 17, a C++17 compiler and CMake >= 3.13; on Debian/Ubuntu:
#   sudo apt-get install -y python3.11 python3.11-venv openjdk-17-jdk-headless g++ cmake
# Environment: SEGLIB_VENV (default ./.venv), SEGLIB_CACHE (default ~/.cache/seglib),
# SEGLIB_PYTHON (default python3.11).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SEGLIB_VENV:-$root/.venv}"
cache="${SEGLIB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/seglib}"
python_bin="${SEGLIB_PYTHON:-$(command -v python3.11 || command -v python3 || echo python3.11)}"
horovod_version="0.28.1"
horovod_patches="seglib1"   # bump when scripts/patch_horovod.py changes: cached wheels are rebuilt
requirements="$root/requirements/stack.txt"
[[ "${1:-}" == "--dev" ]] && requirements="$root/requirements/dev.txt"

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

check_prerequisites() {
  command -v "$python_bin" >/dev/null || die "$python_bin not found. Install Python 3.11 (apt-get install python3.11 python3.11-venv) or set SEGLIB_PYTHON."
  "$python_bin" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || die "$python_bin is not Python 3.11; Petastorm 0.12.1 and the pinned stack are verified on 3.11 only."
  command -v java >/dev/null || die "java not found. Install Java 17 (apt-get install openjdk-17-jdk-headless)."
  local java_major
  java_major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
  [[ "$java_major" == "17" ]] || say "warning: Java $java_major found; Spark 3.5 is verified here with Java 17."
  command -v c++ >/dev/null || die "no C++ compiler (c++) found; Horovod is built from source. Install g++ (apt-get install g++)."
  command -v cmake >/dev/null || die "cmake not found; Horovod is built from source. Install cmake (apt-get install cmake)."
}

ensure_venv() {
  if [[ ! -x "$venv/bin/python" ]]; then
    say "creating virtual environment in $venv"
    "$python_bin" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip==25.3 setuptools==80.9.0 wheel==0.45.1
  fi
}

install_requirements() {
  say "installing pinned stack from ${requirements#"$root"/}"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -e "$root[local,tracking]"  # pins: stack.txt
}

# Horovod 0.28.1 does not build from the PyPI sdist as shipped (see shared/STACK.md):
# PyTorch >= 2.1 headers need C++17, and CMake 4 rejects gloo's minimum version.
# scripts/patch_horovod.py also removes 3-4 s of idle waiting from every horovod.spark.run.
build_horovod_wheel() {
  local wheel_dir="$1" work
  work="$(mktemp -d)"
  say "building Horovod $horovod_version from source (2-3 minutes on 2 cores)"
  "$venv/bin/pip" download --quiet --no-deps --no-binary :all: "horovod==$horovod_version" -d "$work"
  tar -xzf "$work/horovod-$horovod_version.tar.gz" -C "$work"
  local src="$work/horovod-$horovod_version"
  sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
  grep -q 'CMAKE_CXX_STANDARD 17' "$src/CMakeLists.txt" || die "Horovod C++17 patch did not apply to CMakeLists.txt"
  grep -q 'CMAKE_CXX_STANDARD 17' "$src/horovod/torch/CMakeLists.txt" || die "Horovod C++17 patch did not apply to horovod/torch/CMakeLists.txt"
  "$venv/bin/python" "$root/scripts/patch_horovod.py" "$src" || die "Horovod Python patches did not apply"
  # HOROVOD_GPU_OPERATIONS=NCCL (set by the caller, e.g. the CUDA Docker image) adds GPU allreduce;
  # it needs the CUDA toolkit and NCCL. Unset or empty: a CPU-only (Gloo) build.
  local gpu_build=()
  [[ -n "${HOROVOD_GPU_OPERATIONS:-}" ]] && gpu_build=(HOROVOD_GPU_OPERATIONS="$HOROVOD_GPU_OPERATIONS" HOROVOD_NCCL_LINK=SHARED)
  env -u HOROVOD_GPU_OPERATIONS "${gpu_build[@]}" \
    CMAKE_POLICY_VERSION_MINIMUM=3.5 HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
    HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITH_GLOO=1 \
    HOROVOD_CPU_OPERATIONS=GLOO MAKEFLAGS="-j$(nproc)" \
    "$venv/bin/pip" wheel --quiet --no-build-isolation --no-deps --no-cache-dir "$src" -w "$work/dist"
  mkdir -p "$wheel_dir"
  mv "$work"/dist/horovod-*.whl "$wheel_dir/"
  rm -rf "$work"
}

ensure_horovod() {
  if "$venv/bin/python" -c 'import horovod.torch' 2>/dev/null \
    && "$venv/bin/python" "$root/scripts/patch_horovod.py" --check; then
    return
  fi
  local torch_version python_tag wheel_dir
  torch_version="$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
  python_tag="$("$venv/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  # The wheel links against torch's C++ ABI, so it is cached per torch version.
  wheel_dir="$cache/wheels/horovod-$horovod_version-$horovod_patches-torch-$torch_version-$python_tag-$(uname -m)"
  [[ -n "${HOROVOD_GPU_OPERATIONS:-}" ]] && wheel_dir+="-$(tr '[:upper:]' '[:lower:]' <<<"$HOROVOD_GPU_OPERATIONS")"
  if ! ls "$wheel_dir"/horovod-*.whl >/dev/null 2>&1; then
    build_horovod_wheel "$wheel_dir"
  else
    say "using cached Horovod wheel from $wheel_dir"
  fi
  # --force-reinstall: an unpatched build of the same version may be installed already.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$wheel_dir"/horovod-*.whl
  "$venv/bin/python" -c 'import horovod.torch' || die "Horovod installed but horovod.torch does not import"
  "$venv/bin/python" "$root/scripts/patch_horovod.py" --check || die "the installed Horovod lacks seglib's patches"
}

# The report test renders the HTML report in headless Chromium (Debian's package).
ensure_chromium() {
  if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    return
  fi
  local apt=(apt-get)
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "Chromium is needed by the tests; install it (apt-get install chromium) or run as root"
    apt=(sudo apt-get)
  fi
  say "installing Chromium (headless report rendering in the tests)"
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq chromium >/dev/null
}

# The deploy tests validate the Databricks bundle against the schema of the real Databricks CLI
# (`databricks bundle schema`). The CLI is a Go program: built once from the Go module proxy (the only
# source reachable from CI; v0.226.0 is a release it serves) and cached.
databricks_cli_version="v0.226.0"
ensure_databricks_cli() {
  local cli="$cache/bin/databricks-$databricks_cli_version" work
  [[ -x "$cli" ]] && return
  command -v go >/dev/null || die "go not found; the deploy tests build the Databricks CLI from source. Install Go >= 1.22 (apt-get install golang-go)."
  say "building the Databricks CLI $databricks_cli_version from the Go module proxy (about a minute)"
  work="$(mktemp -d)"
  printf 'module seglib/databricks-cli\n\ngo 1.22\n\nrequire github.com/databricks/cli %s\n' "$databricks_cli_version" >"$work/go.mod"
  mkdir -p "$cache/bin"
  (cd "$work" && GOFLAGS=-mod=mod go build -o "$cli.partial" github.com/databricks/cli) \
    || die "building the Databricks CLI failed (see above)"
  mv "$cli.partial" "$cli"
  rm -rf "$work"
  "$cli" bundle schema >/dev/null || die "the Databricks CLI at $cli does not run"
}

check_prerequisites
ensure_venv
install_requirements
ensure_horovod
[[ "${1:-}" == "--dev" ]] && ensure_chromium && ensure_databricks_cli
say "ready: $venv"
