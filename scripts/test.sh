#!/usr/bin/env bash
# Install Glimpse with its development tools into .venv and run every check CI runs:
# ruff, the import-layer contracts, and the test suite (pass pytest options through, e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
# exiftool reads back the XMP sidecars Glimpse writes (tests/unit/test_xmp.py); Debian packages it.
if ! command -v exiftool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq libimage-exiftool-perl >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libimage-exiftool-perl >/dev/null 2>&1; } \
        || echo "note: could not install exiftool; the XMP read-back test will be skipped" >&2
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest "$@"
