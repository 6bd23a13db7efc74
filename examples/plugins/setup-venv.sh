#!/usr/bin/env bash
# Creates (or brings up to date) examples/plugins/.venv with the pinned
# packages of requirements.txt. Safe to run again and from several processes
# at once: the second waits for the first and finds the venv ready.
#
#   examples/plugins/setup-venv.sh            # uses python3 from PATH
#   PYTHON=/usr/bin/python3.12 examples/plugins/setup-venv.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
requirements="$here/requirements.txt"
stamp="$venv/requirements.installed"

mkdir -p "$venv"
exec 9>"$venv.lock"
if command -v flock >/dev/null; then flock 9; fi

if [ -f "$stamp" ] && cmp -s "$stamp" "$requirements" && [ -x "$venv/bin/python" ]; then
    exit 0
fi
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$stamp"
echo "plugin venv ready: $venv" >&2
