# Drawbridge: the two commands a newcomer needs are `make run` and `make test`.
CARGO ?= cargo
DEMO_CONFIG ?= config/demo.yaml
DEMO_KEY := db-demo-key-change-me
DEMO_ADMIN := demo-admin-token-change-me

.PHONY: run test build release bench chaos fuzz lint fmt deps clean prepare-docker up up-multi up-monitoring down

## Build and start the single-node gateway with two mock accounts on :8080.
run: build
	@printf '\n  Drawbridge demo on http://localhost:8080 (API key: %s)\n\n' '$(DEMO_KEY)'
	@printf '  curl -N http://localhost:8080/v1/chat/completions \\\n'
	@printf '    -H "Authorization: Bearer %s" -H "Content-Type: application/json" \\\n' '$(DEMO_KEY)'
	@printf '    -d '"'"'{"model":"kiro","stream":true,"messages":[{"role":"user","content":"Hello, Drawbridge!"}]}'"'"'\n\n'
	@printf '  Make a key of your own (admin API; the secret is shown once):\n'
	@printf '  curl -s http://localhost:8080/admin/keys -H "Authorization: Bearer %s" \\\n' '$(DEMO_ADMIN)'
	@printf '    -d '"'"'{"name":"my-team","rpm":120}'"'"'\n\n'
	@printf '  python -c "from openai import OpenAI; c = OpenAI(base_url=\x27http://localhost:8080/v1\x27, api_key=\x27%s\x27); print(c.chat.completions.create(model=\x27kiro\x27, messages=[{\x27role\x27: \x27user\x27, \x27content\x27: \x27hi\x27}]).choices[0].message.content)"\n\n' '$(DEMO_KEY)'
	./target/debug/drawbridge --config $(DEMO_CONFIG)

## Install test dependencies if missing, check formatting and lints, run every test.
## The property tests draw the same cases on every run (PROPTEST_RNG_SEED), so a result can be
## reproduced and a submission is judged on its own change; `make fuzz` explores new cases.
PROPTEST_RNG_SEED ?= 20261203
export PROPTEST_RNG_SEED
test: deps build
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	SDK_PYTHON=$(CURDIR)/.venv/bin/python $(CARGO) test --workspace --locked

## The four binaries, the mock agent and the mock provider (debug profile, as the tests use them).
build:
	$(CARGO) build --workspace --bins --locked

release:
	$(CARGO) build --workspace --bins --release --locked

## Worker throughput, first-byte latency and the full stack's added latency with the mock agent
## (release build); see BENCHMARKS.md. Extra flags: make bench BENCH_ARGS="--duration 10", or
## BENCH_ARGS="--sections stack" for the full stack alone, "--sections warm" for warm sessions
## against full render (drawbridge-bench --help lists them).
## BENCH_ARGS="--sections soak": the 10-minute soak (RSS and ValKey keys flat under load; not by default).
bench:
	$(CARGO) build --release --workspace --bins --locked
	./target/release/drawbridge-bench $(BENCH_ARGS)

## The chaos suite's long run (RELIABILITY.md): 1,000 streamed requests, 6 at a time, through two
## engines while workers, agents, the leading engine and Redis are killed. `make test` runs a
## short version. Tune with CHAOS_REQUESTS, CHAOS_CONCURRENCY, CHAOS_SEED, CHAOS_FAULT_MS.
CHAOS_REQUESTS ?= 1000
CHAOS_CONCURRENCY ?= 6
chaos:
	$(CARGO) build --workspace --bins --locked
	CHAOS_REQUESTS=$(CHAOS_REQUESTS) CHAOS_CONCURRENCY=$(CHAOS_CONCURRENCY) CHAOS_ENFORCE_TARGET=1 \
		$(CARGO) test -p drawbridge-e2e --test chaos --locked -- --nocapture

## The property tests (request decoders, SSE and dialect readers, sanitizer, continuation,
## breaker, tool tags) with random seeds and FUZZ_CASES cases each. A failure prints the case and
## saves its seed in the test's .proptest-regressions file: commit it with the fix.
FUZZ_CASES ?= 20000
fuzz:
	env -u PROPTEST_RNG_SEED PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --locked \
		-p drawbridge-types --test fuzz --test fuzz_anthropic --test fuzz_responses
	env -u PROPTEST_RNG_SEED PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --locked -p drawbridge-core

## Docker Compose (compose/docker-compose.yml; see README "Deploying").
COMPOSE ?= docker compose -f compose/docker-compose.yml
WORKERS ?= 3

prepare-docker:
	$(COMPOSE) --profile multi build
	docker build -f compose/Dockerfile --target drawbridge -t drawbridge:latest .

## ValKey, an engine, $(WORKERS) workers and a gateway on :8080.
up:
	$(COMPOSE) up -d --scale kiro-worker=$(WORKERS)

## Two gateways and two engines behind nginx on :8000.
up-multi:
	$(COMPOSE) --profile multi up -d --scale kiro-worker=$(WORKERS)

## The stack plus Prometheus (:9090) and Grafana (:3000, dashboard "Drawbridge").
up-monitoring:
	$(COMPOSE) --profile monitoring up -d --scale kiro-worker=$(WORKERS)

down:
	$(COMPOSE) --profile multi --profile monitoring down

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

deps:
	./scripts/test-deps.sh

clean:
	$(CARGO) clean
	rm -rf .venv .run
