#!/usr/bin/env bash
# Lints template.yaml with cfn-lint and `sam validate --lint`, checks which function roles
# may decrypt credentials, and checks the template's properties after the SAM transform
# (scoped IAM, the connection budget, alarm actions, DLQs, log retention, access logs, the
# database proxy; scripts/check-template-properties.py); exits non-zero on any finding.
#
# Uses the tools from .venv at the repository root, creating it when they are missing
# (python3 -m venv; cfn-lint and aws-sam-cli from PyPI). Both run offline. Set
# RITMO_LINT_PYTHON_VENV to use another virtualenv.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RITMO_LINT_PYTHON_VENV:-$root/.venv}"
template="$root/template.yaml"
region="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"

if [[ ! -x "$venv/bin/cfn-lint" || ! -x "$venv/bin/sam" ]]; then
  echo "lint-template: installing cfn-lint and aws-sam-cli into $venv" >&2
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check cfn-lint aws-sam-cli
fi

export SAM_CLI_TELEMETRY=0
status=0

echo "== cfn-lint $("$venv/bin/cfn-lint" --version | awk '{print $2}')"
if "$venv/bin/cfn-lint" "$template"; then
  echo "cfn-lint: no findings"
else
  status=1
fi

echo "== sam validate --lint ($("$venv/bin/sam" --version | awk '{print $NF}'))"
# sam validate prints its verdict on stdout and exits 0 even for some warnings, so both the
# exit status and the verdict line are checked.
if output="$(cd "$root" && "$venv/bin/sam" validate --lint --region "$region" --template-file "$template" 2>&1)" \
   && grep -q "is a valid SAM Template" <<<"$output"; then
  echo "$output"
else
  echo "$output"
  status=1
fi

echo "== credential access of the function roles"
"$venv/bin/python" "$root/scripts/check-template-access.py" "$template" || status=1

echo "== template properties (after the SAM transform)"
"$venv/bin/python" "$root/scripts/check-template-properties.py" "$template" || status=1
echo "== each property check catches its breakage"
"$venv/bin/python" "$root/scripts/check-template-properties.py" --mutations "$template" || status=1

exit "$status"
