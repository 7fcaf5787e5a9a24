#!/usr/bin/env bash
# Makes .venv with what the tests and linters need from PyPI: moto's server (SQS, KMS and
# Secrets Manager stand-in), cfn-lint and the SAM CLI. Idempotent; quiet when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/cfn-lint" ] || [ ! -x "$venv/bin/sam" ]; then
  echo "installing moto[server], cfn-lint and aws-sam-cli into $venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5.1,<6' 'cfn-lint>=1.20,<2' aws-sam-cli >&2
fi
