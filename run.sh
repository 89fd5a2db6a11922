#!/usr/bin/env bash
# One entry point for a fresh clone. Each command first makes sure the project-local
# environment (.venv) is installed, then:
#   bash run.sh lab    generate the offline dataset if missing and open JupyterLab at notebooks/
#   bash run.sh test   run the whole test suite (extra arguments go to pytest)
#   bash run.sh dashboard  the ε explorer as a Voilà web app (extra arguments go to voila)
# Installing is skipped when .venv already matches pyproject.toml, so a second run is fast.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV=.venv
STAMP="$VENV/.installed"

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3 python; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  echo "error: Python 3.11 is needed (TensorFlow 2.21 wheels); set PYTHON=/path/to/python3.11" >&2
  exit 1
}

install() {
  local wanted
  wanted=$(cat pyproject.toml | sha256sum | cut -c1-16)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$wanted" ]; then
    return  # already installed from this pyproject.toml
  fi
  [ -x "$VENV/bin/python" ] || "$(find_python)" -m venv "$VENV"
  echo "Installing the workbench and its dependencies into $VENV (first run takes a few minutes)..."
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
  echo "$wanted" > "$STAMP"
}

pool_size() {
  # One preheated kernel per ~1.5 GB of available memory (a TensorFlow kernel with a small
  # backbone holds about 1 GB), at least 1 and at most 4 or the number of CPU cores (kernels
  # preheat at the same time: four on two cores slowed every page).
  if [ -n "${WORKBENCH_POOL:-}" ]; then echo "$WORKBENCH_POOL"; return; fi
  local kb cores
  kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo 2>/dev/null || true)
  cores=$(nproc 2>/dev/null || echo 1)
  local n=$(( ${kb:-0} / 1500000 ))
  (( n > 4 )) && n=4
  (( n > cores )) && n=$cores
  (( n < 1 )) && n=1
  echo "$n"
}

command=${1:-}
shift || true
case "$command" in
  lab)
    install
    "$VENV/bin/python" -m workbench prepare
    root_flag=()
    [ "$(id -u)" = 0 ] && root_flag=(--allow-root)  # containers often run as root; Jupyter refuses otherwise
    # notebooks/ unless the caller names a folder (JupyterLab refuses two: "root_dir only accepts one value")
    dir_flag=(--notebook-dir=notebooks)
    for arg in "$@"; do
      case "$arg" in --notebook-dir*|--ServerApp.root_dir*|--ServerApp.notebook_dir*) dir_flag=() ;; esac
    done
    exec "$VENV/bin/jupyter" lab "${dir_flag[@]}" "${root_flag[@]}" "$@"
    ;;
  test)
    install
    # Two workers (pytest-xdist): much of the suite waits on kernels, servers and browsers. Each
    # test file runs whole on one worker (tests/conftest.py); "-n 0" after "test" runs one process.
    exec "$VENV/bin/python" -m pytest -n 2 --dist loadfile "$@"
    ;;
  dashboard)
    cull=${WORKBENCH_CULL_SECONDS:-600}
    if ! [[ "$cull" =~ ^[0-9]+$ ]]; then
      echo "error: WORKBENCH_CULL_SECONDS must be a whole number of seconds (0: never cull), got '$cull'" >&2
      exit 2
    fi
    install
    "$VENV/bin/python" -m workbench prepare
    # Preheated kernels run the notebook (TensorFlow import, baseline, scores) before anyone asks,
    # so a page opens onto a live dashboard. WORKBENCH_POOL overrides the pool size.
    # A closed page's kernel (~1 GB) is shut down once idle for WORKBENCH_CULL_SECONDS: Voilà's own
    # shutdown request on closing a page is refused (voila-dashboards/voila#1458). Kernels of open
    # pages (connected) and of the pool are never culled.
    culling=(--MappingKernelManager.cull_idle_timeout="$cull")
    (( cull > 0 )) && culling+=(--MappingKernelManager.cull_interval="$(( cull < 60 ? cull : 60 ))")
    exec "$VENV/bin/voila" --show_tracebacks=True --preheat_kernel=True --pool_size="$(pool_size)" \
      "${culling[@]}" notebooks/01_explore_threshold.ipynb "$@"
    ;;
  install)
    install
    ;;
  *)
    echo "usage: bash run.sh {lab|test|dashboard|install} [extra arguments]" >&2
    exit 2
    ;;
esac
