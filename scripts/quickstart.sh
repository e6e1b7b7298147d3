#!/usr/bin/env bash
# Install Glimpse into .venv, index a folder of photos and search it.
#
#   scripts/quickstart.sh [FOLDER] [QUERY]
#
# Without FOLDER it indexes a generated sample folder of toy-world shapes (./samples).
# The default model is downloaded once on first use; offline, set GLIMPSE_MODEL=toyworld
# to use the small test model that ships with Glimpse. Afterwards, `.venv/bin/glimpse` opens the app.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[gui]'
folder="${1:-}"
query="${2:-a red circle}"
if [ -z "$folder" ]; then
    folder=samples
    .venv/bin/python -m indexer.toyworld.samples "$folder"
fi
.venv/bin/glimpse index "$folder"
.venv/bin/glimpse search "$query" -k 5
echo "Most frequent automatic tags:"
.venv/bin/glimpse tags list | head -n 8
