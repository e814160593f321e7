#!/usr/bin/env bash
# Installs the pinned dependencies into the current Python; `--dev` adds the test tools.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r requirements.txt
# tensorflow-text declares a dependency on the full `tensorflow` wheel (and so on
# the CUDA build); it only needs the runtime that tensorflow-cpu already provides.
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps -r requirements-nodeps.txt
if [ "${1:-}" = "--dev" ]; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r requirements-dev.txt
fi
