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
