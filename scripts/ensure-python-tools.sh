#!/usr/bin/env bash
# Makes .venv with what the tests and linters need from PyPI: moto's server (SQS, KMS and
# Secrets Manager stand-in), cfn-lint, the SAM CLI and cargo-lambda (`make invoke`, `make
# package`; its wheel brings zig for cross-compiling, and a prebuilt binary saves the 22 min of
# `cargo install cargo-lambda`). Idempotent; quiet when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/cfn-lint" ] || [ ! -x "$venv/bin/sam" ] \
  || [ ! -x "$venv/bin/cargo-lambda" ]; then
  echo "installing moto[server], cfn-lint, aws-sam-cli and cargo-lambda into $venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5.1,<6' 'cfn-lint>=1.20,<2' \
    aws-sam-cli 'cargo-lambda>=1.8,<2' >&2
fi
