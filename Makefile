# The two commands a newcomer runs: `make dev` and `make test`. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export RITMO_MASTER_ENCRYPTION_KEY ?= ritmo-example-master-key-32bytes
DEV_REPO := .dev/ritmo-config
RITMO := target/debug/ritmo
# Where `make dev` serves the webhook and the API.
LISTEN ?= 127.0.0.1:8080

.PHONY: help dev test lint build bins example-repo tools clean-dev bench bench-process bench-targets bench-smoke test-faults fuzz-smoke \
  storm invoke invoke-all package

help:
	@echo "make dev   - start PostgreSQL if needed, sync examples/ritmo-config into it, show plan and status,"
	@echo "             then run \`ritmo serve\` on $(LISTEN) until Ctrl-C"
	@echo "make test  - install what the tests need (PostgreSQL check, moto, cfn-lint) and run every check"
	@echo "make test-faults - kill ritmo and PostgreSQL mid-apply on a throwaway cluster (a few minutes)"
	@echo "make storm - 1,000 signed pushes, 200 at once, into the webhook at the connection budget (docs/storm.md)"
	@echo "make invoke FN=api EVENT=events/api-jobs.json - one Lambda function under cargo-lambda's emulator"
	@echo "make invoke-all - every function with every events/ file, answers checked"
	@echo "make package - sam build for arm64 (.aws-sam/build), bootstraps checked with file"

build:
	cargo build -p ritmo-cli

# Every binary, with the features `cargo test --workspace` resolves, so that after `make test` the
# suites below rebuild nothing (`-p PKG` resolves features for that package alone and recompiles
# the dependencies it shares: two minutes of CI's time).
bins:
	cargo build --workspace --bins

# A git repository made from examples/ritmo-config, committed again whenever the example changes,
# so the sync reads a real commit as it would from GitHub.
example-repo:
	@mkdir -p $(DEV_REPO)
	@rsync -a --delete --exclude .git examples/ritmo-config/ $(DEV_REPO)/
	@cd $(DEV_REPO) && { [ -d .git ] || git init -q -b main; } \
	  && git add -A && { git diff --cached --quiet || git -c user.name=ritmo-dev -c user.email=dev@ritmo.invalid commit -qm "example config $$(date -u +%FT%TZ)"; }

# The CLI and `ritmo serve` read the same target from the same variables, so the server's
# plans continue incrementally from what the CLI applied. `sync` alone, because it validates
# (printing the warnings) and shows the plan before applying: a `validate` and a `plan` before
# it printed every warning three times.
dev: build example-repo
	@export DATABASE_URL="$$(scripts/ensure-postgres.sh --database ritmo_dev)" || exit 2; \
	  echo "PostgreSQL: $${DATABASE_URL}"; \
	  export RITMO_GITOPS_REPO_URL="$(abspath $(DEV_REPO))" RITMO_GITOPS_REPO_BRANCH=main; \
	  $(RITMO) gitops sync && \
	  $(RITMO) gitops status && \
	  $(RITMO) get jobs && \
	  echo && \
	  { [ -s .dev/api-token ] || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > .dev/api-token); } && \
	  export RITMO_API_TOKEN="$$(cat .dev/api-token)" && \
	  echo "API token (.dev/api-token): $$RITMO_API_TOKEN" && \
	  echo "  curl -X POST -H \"Authorization: Bearer $$(cat .dev/api-token)\" -H 'Content-Type: application/json' http://$(LISTEN)/api/v1/gitops/sync" && \
	  RITMO_GITOPS_WEBHOOK_SECRET="$${RITMO_GITOPS_WEBHOOK_SECRET:-ritmo-dev-webhook-secret}" \
	  exec $(RITMO) serve --listen "$(LISTEN)"

tools:
	@scripts/ensure-python-tools.sh

lint: tools
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	scripts/lint-template.sh

test: tools lint
	@mkdir -p .dev; export DATABASE_URL="$$(scripts/ensure-postgres.sh)" || exit 2; \
	  export MOTO_SERVER="$$PWD/.venv/bin/moto_server"; \
	  set -o pipefail; cargo test --workspace --no-fail-fast 2>&1 | tee .dev/test.log; status=$$?; \
	  awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' .dev/test.log; \
	  exit $$status

# The fault-injection suite (issue 22, tests/faults/, docs/faults.md): `ritmo` killed and
# PostgreSQL stopped at once in the middle of 10,000-resource applies, on a throwaway cluster it
# starts itself. FAULTS_SEED=N replays a run; FAULTS_ONLY=NAME runs one scenario.
test-faults: bins
	cargo test --workspace --test faults

# The webhook storm (issue 27, docs/storm.md): 1,000 signed GitHub pushes, 200 at once, into
# eight webhook environments on a throwaway cluster whose max_connections is the connection
# budget, the plan queue on moto. STORM_DELIVERIES, STORM_AT_ONCE, STORM_WEBHOOK_ENVIRONMENTS,
# STORM_MAX_CONNECTIONS change the run.
storm: tools
	MOTO_SERVER="$${MOTO_SERVER:-$$PWD/.venv/bin/moto_server}" cargo test --workspace --test storm

# The performance suite of docs/benchmarks.md on the local PostgreSQL (BENCH_ARGS, e.g.
# `--resources 100000` or `--parse-only`); `bench-smoke` is CI's quick run of the same code.
bench:
	@export DATABASE_URL="$$(scripts/ensure-postgres.sh)" || exit 2; \
	  cargo run --profile profiling -p ritmo-bench -- $(BENCH_ARGS)

# The release binaries as whole processes (issues 22 and 26, docs/benchmarks.md): each
# function's cold start; validate and full/no-op/1/100-file syncs over file:// and smart HTTP
# beside their floors; incremental syncs by number of changed files beside --full. `make bench-process RESOURCES=100000` to
# see growth.
RESOURCES ?= 10000
bench-process: tools
	@export DATABASE_URL="$$(scripts/ensure-postgres.sh)" || exit 2; \
	  cargo build --release -p ritmo-cli -p ritmo-bench -p api -p applier -p planner -p poller \
	    -p webhook && \
	  target/release/ritmo-bench --resources $(RESOURCES) --repeat 5 --cold-starts --handlers \
	    --whole-process --incremental-changes 1000,4000,10000

# The poller's tick over many targets (issue 26, docs/scaling.md): TARGETS small repositories
# behind one local smart-HTTP server, each request held HEAD_DELAY_MS (0 = loopback; 100 stands
# in for GitHub), at each POLL_CONCURRENCY.
TARGETS ?= 1000
HEAD_DELAY_MS ?= 0,100
POLL_CONCURRENCY ?= 8,64
bench-targets:
	@export DATABASE_URL="$$(scripts/ensure-postgres.sh)" || exit 2; \
	  cargo run --profile profiling -p ritmo-bench -- --targets $(TARGETS) --repeat 3 \
	    --head-delay-ms $(HEAD_DELAY_MS) --poll-concurrency $(POLL_CONCURRENCY)

bench-smoke: bins
	@export DATABASE_URL="$$(scripts/ensure-postgres.sh)" || exit 2; \
	  target/debug/ritmo-bench --resources 1000 --repeat 1 --webhook-iterations 100

# Issue 22: each fuzz target for FUZZ_SECONDS from its committed corpus (fuzz/corpus/), new
# inputs kept in .dev/fuzz; fails on any crash, hang over 1 s or RSS over 512 MB. The crash
# file is under fuzz/artifacts/. No ASan (stable toolchain); -a keeps overflow checks; 16 codegen
# units because the build is most of the smoke's time. docs/fuzzing.md has the long runs.
FUZZ_TARGETS := manifest_load webhook_receive ciphertext_decode bootstrap_config git_validators
FUZZ_SECONDS ?= 60
fuzz-smoke:
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	@set -e; cd fuzz; unset CARGO_TARGET_DIR; \
	  for target in $(FUZZ_TARGETS); do \
	    mkdir -p ../.dev/fuzz/$$target; \
	    echo "fuzz-smoke: $$target for $(FUZZ_SECONDS) s"; \
	    cargo fuzz run --sanitizer none -a --codegen-units 16 $$target ../.dev/fuzz/$$target corpus/$$target -- \
	      -max_total_time=$(FUZZ_SECONDS) -timeout=1 -rss_limit_mb=512 -print_final_stats=1; \
	  done

# One function under cargo-lambda's emulator (`cargo lambda watch` + `cargo lambda invoke`), with
# the environment template.yaml gives it, against the local PostgreSQL and a moto server it
# starts, and the target's repository served offline from the example (example-repo); prints the
# response. `make invoke FN=webhook EVENT=events/webhook-github-push-apigw-v2.json`
invoke: tools example-repo
	@[ -n "$(FN)" ] && [ -n "$(EVENT)" ] || { echo "usage: make invoke FN=api EVENT=events/api-jobs.json" >&2; exit 2; }
	@export DATABASE_URL="$$(scripts/ensure-postgres.sh --database ritmo_invoke)" || exit 2; \
	  .venv/bin/python scripts/invoke.py --function "$(FN)" --event "$(EVENT)"

# Every function with every events/ file that is its own, each answer checked (status, body,
# the messages on moto's queues; EXPECTED in scripts/invoke.py), on a fresh database. CI runs it.
invoke-all: tools example-repo
	@export DATABASE_URL="$$(scripts/ensure-postgres.sh)" || exit 2; \
	  .venv/bin/python scripts/invoke.py --all

# `sam build` for arm64 (five aarch64 bootstraps under .aws-sam/build), checked with `file`.
package: tools
	@scripts/package.sh

clean-dev:
	rm -rf .dev
