#!/usr/bin/env bash
# Create .venv in the repository root and install rtdetr with its test dependencies.
# Safe to re-run: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

# torch and torchvision are pinned together (torchvision's compiled ops must match torch).
case "$(uname -m)" in
  aarch64|arm64) TORCH="torch==2.9.1 torchvision==0.24.1" ;;
  *)             TORCH="torch==2.14.1 torchvision==0.29.1" ;;
esac
.venv/bin/python -m pip install --quiet --disable-pip-version-check $TORCH
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"

# OpenVINO's aarch64 wheels need glibc 2.35 or newer (manylinux_2_35; x86_64's need 2.17): on
# older ARM systems the OpenVINO paths are skipped, with the reason, and everything else works.
if [ "$(uname -m)" = aarch64 ] || [ "$(uname -m)" = arm64 ]; then
  GLIBC=$(.venv/bin/python -c 'import platform; print(platform.libc_ver()[1] or "0")')
  if .venv/bin/python -c "import sys; sys.exit(tuple(map(int, '$GLIBC'.split('.')[:2])) < (2, 35))"; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "openvino==2026.4.1"
  else
    echo "setup: openvino skipped: its aarch64 wheels need glibc >= 2.35, this system has $GLIBC"
  fi
fi

# The serve page's browser tests (tests/serve/test_page.py) drive the system's Chromium through
# Playwright, which never downloads a browser; without one they skip. Installed once, as root.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
      || echo "setup: chromium could not be installed with apt-get: the serve page tests will skip"
  else
    echo "setup: no chromium: install it (e.g. apt-get install chromium, as root) for the serve page tests, which skip without it"
  fi
fi
