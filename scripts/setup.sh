#!/usr/bin/env bash
# Set up .venv on a fresh machine: Python 3.11+, CPU torch, the project, its test tools and Ray (tested in CI).
# Safe to rerun: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.extortion-guard-installed
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  # pip's own output goes to a log, shown only if a step fails: set-up says one line on success.
  log=.venv/setup.log
  : > "$log"
  pip_install() { .venv/bin/python -m pip install --quiet "$@" >>"$log" 2>&1 || { cat "$log" >&2; echo "set-up failed: pip install $*" >&2; exit 1; }; }
  pip_install --upgrade pip
  # torch first, pinned: 2.13.0 is the CPU build that lies on these machines' disk;
  # an unpinned torch would pull a multi-GB CUDA build.
  pip_install torch==2.13.0
  pip_install -e ".[test,ray]"
  echo "$wanted" > "$stamp"
  echo "set-up done: .venv has torch $(.venv/bin/python -c 'import torch; print(torch.__version__)') and the project (pip's log: $log)"
fi
