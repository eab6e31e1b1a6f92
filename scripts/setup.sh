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
