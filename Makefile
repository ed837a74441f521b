# Two commands matter: `make run` serves, `make test` runs every test.
# Both create the virtual environment they need first: `make run` installs only what serving
# needs (the runtime dependencies), `make test` adds the `dev` extra (each has its own stamp).
PYTHON    ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
RUN_STAMP := $(VENV)/.run-stamp
STAMP     := $(VENV)/.dev-stamp
PROTOS    := $(shell find protos -name '*.proto')
# LISTEN is unset unless given (`make run LISTEN=HOST:PORT` or in the environment): then the
# bridge's own default applies, BRIDGE_LISTEN or 127.0.0.1:50051, as for every other option.

.PHONY: run test demo generate check-generated lint typecheck clean dev-upstream dist

# The server depends on aigateway-client (client/): both are installed from the checkout.
$(RUN_STAMP): pyproject.toml client/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ./client -e .
	touch $@

$(STAMP): pyproject.toml client/pyproject.toml $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e ./client -e '.[dev]'
	touch $@

## run: serve with the configuration of the environment (BRIDGE_LISTEN, BRIDGE_UPSTREAM_URL, ...;
## default 127.0.0.1:50051 against the Vercel AI Gateway); LISTEN=HOST:PORT overrides the address
run: $(RUN_STAMP)
	$(BIN)/python -m bridge serve $(if $(LISTEN),--listen $(LISTEN))

## test: lint, type check, then every test (unit, integration, generated-code freshness)
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q

## dist: the two wheels in dist/: aigateway-client (stubs + JSON translation) and aigateway-bridge
dist: $(RUN_STAMP)
	rm -rf dist
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist ./client .

## demo: local development upstream + bridge + a client streaming a chat, all offline
demo: $(RUN_STAMP)
	$(BIN)/python -m dev.demo

## dev-upstream: the local OpenAI-compatible development upstream on 127.0.0.1:8080
dev-upstream: $(RUN_STAMP)
	$(BIN)/python -m dev.upstream --listen 127.0.0.1:8080

## docker: the container image aigateway-bridge:$(IMAGE_TAG) from deploy/Dockerfile (needs Docker)
# The project's version, written once in pyproject.toml.
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
.PHONY: docker
docker:
	@command -v docker >/dev/null 2>&1 || { echo "make docker needs Docker: https://docs.docker.com/get-docker/" >&2; exit 1; }
	docker build -f deploy/Dockerfile -t aigateway-bridge:$(IMAGE_TAG) .

## generate: regenerate generated/ from protos/ with the pinned grpcio-tools
generate: $(STAMP)
	$(BIN)/python -m dev.codegen

## lint: ruff check and ruff format --check (generated/ excluded)
lint: $(STAMP)
	$(BIN)/ruff check bridge dev client tests bench
	$(BIN)/ruff format --check bridge dev client tests bench

## typecheck: mypy --strict on bridge/, dev/, client/ and tests/
typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info client/*.egg-info .pytest_cache .mypy_cache .ruff_cache

# --------------------------------------------------------------- protos, descriptor, examples
# buf (pinned in the `dev` extra) checks and builds protos/. The examples build their clients
# from protos/ with their own toolchains (Go, Node/npm, Java/Maven, Rust/cargo); packages come
# from the Go module proxy, npm, Maven Central and crates.io, pinned by go.sum,
# package-lock.json, pom.xml and Cargo.lock.
BUF        := $(BIN)/buf
BASELINE   := protos/baseline.binpb
DESCRIPTOR := build/aigateway.binpb
TS_DIR     := examples/typescript
JAVA_JAR   := examples/java/target/aigateway-example.jar
RUST_BIN   := examples/rust/target/debug/client
# Where googleapis-common-protos installed google/rpc/*.proto (evaluated after $(STAMP)).
GOOGLE_RPC  = $(shell $(BIN)/python -c 'import os, google.rpc.status_pb2 as m; print(os.path.dirname(m.__file__))')
# $(call need,COMMAND,MESSAGE): fail with MESSAGE unless COMMAND is on PATH.
need = @command -v $(1) >/dev/null 2>&1 || { echo "$(2)" >&2; exit 1; }

.PHONY: proto-check proto-baseline descriptor examples examples-go examples-typescript examples-java \
	examples-rust

## proto-check: buf lint (STANDARD + COMMENTS), buf format, buf breaking against protos/baseline.binpb
proto-check: $(STAMP)
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(BUF) breaking --against $(BASELINE)

## proto-baseline: accept the current protos/ as the new breaking-change baseline (on purpose only)
proto-baseline: $(STAMP)
	$(BUF) build --exclude-source-info -o $(BASELINE)

## descriptor: build/aigateway.binpb, a FileDescriptorSet with imports and comments (grpcurl, Envoy)
descriptor: $(DESCRIPTOR)

$(DESCRIPTOR): $(PROTOS) buf.yaml $(STAMP)
	@mkdir -p $(@D)
	$(BUF) build --as-file-descriptor-set -o $@

## examples: build the Go, TypeScript, Java and Rust example clients from protos/
examples: examples-go examples-typescript examples-java examples-rust

## examples-go: examples/go/bin/client (grpc-go; protoc-gen-go and protoc-gen-go-grpc from go.mod)
examples-go: $(STAMP)
	$(call need,go,examples-go needs Go 1.26 or newer on PATH: https://go.dev/dl/)
	cd examples/go && go build -o bin/ tool
	rm -rf examples/go/gen/aigateway
	$(BUF) generate --template examples/go/buf.gen.yaml
	cd examples/go && go build -o bin/client .

## examples-typescript: examples/typescript/dist/client.js (@grpc/grpc-js, ts-proto, tsc)
examples-typescript: $(TS_DIR)/dist/client.js

$(TS_DIR)/dist/client.js: $(PROTOS) $(TS_DIR)/src/client.ts $(TS_DIR)/buf.gen.yaml \
		$(TS_DIR)/tsconfig.json $(TS_DIR)/node_modules/.installed $(STAMP)
	mkdir -p $(TS_DIR)/third_party/google/rpc
	cp $(GOOGLE_RPC)/status.proto $(GOOGLE_RPC)/error_details.proto $(TS_DIR)/third_party/google/rpc/
	$(BUF) generate --template $(TS_DIR)/buf.gen.yaml
	cd $(TS_DIR) && npm run --silent build
	touch $@

$(TS_DIR)/node_modules/.installed: $(TS_DIR)/package.json $(TS_DIR)/package-lock.json
	$(call need,npm,examples-typescript needs Node.js 18 or newer with npm on PATH: https://nodejs.org/)
	cd $(TS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## examples-java: examples/java/target/aigateway-example.jar (grpc-java, protobuf-maven-plugin)
examples-java: $(JAVA_JAR)

$(JAVA_JAR): $(PROTOS) examples/java/pom.xml $(shell find examples/java/src -name '*.java')
	$(call need,java,examples-java needs a JDK 17 or newer on PATH)
	$(call need,mvn,examples-java needs Maven 3.8 or newer on PATH: https://maven.apache.org/)
	cd examples/java && mvn -B -q -Dstyle.color=never package

## examples-rust: examples/rust/target/debug/client (tonic, prost; protoc from protoc-bin-vendored)
examples-rust: $(RUST_BIN)

$(RUST_BIN): $(PROTOS) examples/rust/Cargo.toml examples/rust/Cargo.lock examples/rust/build.rs \
		examples/rust/src/main.rs
	$(call need,cargo,examples-rust needs Rust 1.85 or newer with cargo on PATH: https://rustup.rs/)
	cd examples/rust && cargo build --locked --quiet
	touch $@

# --------------------------------------------------------------------------- gRPC tools
# The tools people already point at a gRPC server, which the tests drive the bridge with
# (tests/test_tools.py): grpcurl and ghz in reflection mode, grpc-health-probe. Built from the
# Go module proxy at pinned versions into build/bin (needs Go; about 2-3 minutes the first time,
# a stamp per version after that).
TOOLS_BIN            := build/bin
GRPCURL_VERSION      := v1.9.3
HEALTH_PROBE_VERSION := v0.4.63
GHZ_VERSION          := v0.120.0
TOOLS := $(TOOLS_BIN)/.grpcurl@$(GRPCURL_VERSION) $(TOOLS_BIN)/.ghz@$(GHZ_VERSION) \
	$(TOOLS_BIN)/.grpc-health-probe@$(HEALTH_PROBE_VERSION)
GO_INSTALL = GOBIN=$(CURDIR)/$(TOOLS_BIN) go install

.PHONY: tools

## tools: build/bin/grpcurl, ghz and grpc-health-probe from the Go module proxy (pinned versions)
tools: $(TOOLS)

$(TOOLS_BIN)/.grpcurl@%:
	$(call need,go,make tools needs Go 1.22 or newer on PATH: https://go.dev/dl/)
	$(GO_INSTALL) github.com/fullstorydev/grpcurl/cmd/grpcurl@$*
	touch $@

$(TOOLS_BIN)/.ghz@%:
	$(call need,go,make tools needs Go 1.22 or newer on PATH: https://go.dev/dl/)
	$(GO_INSTALL) github.com/bojand/ghz/cmd/ghz@$*
	touch $@

$(TOOLS_BIN)/.grpc-health-probe@%:
	$(call need,go,make tools needs Go 1.22 or newer on PATH: https://go.dev/dl/)
	$(GO_INSTALL) github.com/grpc-ecosystem/grpc-health-probe@$*
	touch $@

# --------------------------------------------------------------------------- benchmarks
# `make bench`: the bridge next to direct REST (httpx) and the openai SDK, in one run on
# loopback (bench/run.py, about 5 minutes); results in bench/results/. The upstream is a
# small Go server (bench/upstream); ghz comes from the Go module proxy when it can, and its
# column stays empty when it cannot. `make bench-micro`: pytest-benchmark microbenchmarks
# of the translation hot paths (bench/micro, not part of `make test`).
BENCH_STAMP := $(VENV)/.bench-stamp
BENCH_BIN   := bench/bin

.PHONY: bench bench-capacity bench-micro bench-profile bench-ghz

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

$(BENCH_BIN)/upstream: bench/upstream/main.go bench/upstream/go.mod
	$(call need,go,make bench needs Go 1.22 or newer on PATH for its upstream: https://go.dev/dl/)
	mkdir -p $(BENCH_BIN)
	cd bench/upstream && go build -o ../bin/upstream .

## bench-ghz: bench/bin/ghz from the Go module proxy (optional: failure only leaves a note)
bench-ghz:
	@test -x $(BENCH_BIN)/ghz || GOBIN=$(CURDIR)/$(BENCH_BIN) go install \
		github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION) || \
		echo "note: could not install ghz $(GHZ_VERSION); the benchmark runs without it" >&2

## bench: measure the bridge against direct httpx and the openai SDK; prints the table
bench: $(BENCH_STAMP) $(BENCH_BIN)/upstream $(DESCRIPTOR) bench-ghz
	$(BIN)/python bench/run.py
	$(MAKE) bench-capacity

## bench-capacity: N streams at 20 chunks/s for growing N, 1 and 2 workers (CAPACITY_ARGS=--quick)
CAPACITY_ARGS ?= --quick --idle 1000
bench-capacity: $(BENCH_STAMP) $(BENCH_BIN)/upstream
	$(BIN)/python bench/capacity.py $(CAPACITY_ARGS)

## bench-peers: the bridge next to the LiteLLM proxy in front of the same upstream (installs
## LiteLLM into .venv-peers; not part of make bench)
PEERS_VENV  := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed-stamp
PEERS_PIN   := litellm[proxy]==1.106.12
.PHONY: bench-peers
$(PEERS_STAMP):
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	echo '*' > $(PEERS_VENV)/.gitignore  # the venv ignores itself, as newer venvs do
	$(PEERS_VENV)/bin/python -m pip install --quiet '$(PEERS_PIN)'
	touch $@
bench-peers: $(BENCH_STAMP) $(BENCH_BIN)/upstream $(PEERS_STAMP)
	$(BIN)/python bench/peers.py

## bench-micro: pytest-benchmark microbenchmarks of translation, SSE and headers
bench-micro: $(BENCH_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider bench/micro \
		--benchmark-columns=min,median,mean,ops --benchmark-sort=name

## bench-profile: py-spy profiles of the bridge under each load, in bench/profiles/
bench-profile: $(BENCH_STAMP) $(BENCH_BIN)/upstream
	$(BIN)/python bench/profile.py

# ------------------------------------------------------------------------------ interop
# `make interop` (not part of `make test`: it installs a lot): the bridge in front of real
# OpenAI-compatible servers on loopback, every RPC compared with the server's own JSON
# (tests/interop/run.py): the LiteLLM proxy with `mock_response` models, from its own venv
# (.venv-interop; litellm 1.106.12 is the newest whose `proxy` extra installs from PyPI
# alone), and Prism serving third_party/openai-openapi/openapi.yaml in static mode (npm,
# under build/interop). Logs of both servers: build/interop/logs/.
INTEROP_VENV  := .venv-interop
INTEROP_STAMP := $(INTEROP_VENV)/.installed-stamp
INTEROP_NODE  := build/interop
LITELLM_PIN   := litellm[proxy]==1.106.12
PRISM_PIN     := @stoplight/prism-cli@5.16.0

.PHONY: interop

$(INTEROP_STAMP):
	test -x $(INTEROP_VENV)/bin/python || $(PYTHON) -m venv $(INTEROP_VENV)
	echo '*' > $(INTEROP_VENV)/.gitignore  # the venv ignores itself, as newer venvs do
	$(INTEROP_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INTEROP_VENV)/bin/python -m pip install --quiet '$(LITELLM_PIN)'
	touch $@

$(INTEROP_NODE)/.installed:
	$(call need,npm,make interop needs Node.js 18 or newer with npm on PATH: https://nodejs.org/)
	mkdir -p $(INTEROP_NODE)
	test -f $(INTEROP_NODE)/package.json || echo '{"private": true}' > $(INTEROP_NODE)/package.json
	cd $(INTEROP_NODE) && npm install --no-audit --no-fund --loglevel=error $(PRISM_PIN)
	touch $@

## interop: the bridge against the LiteLLM proxy and Prism (OpenAI spec), compared call by call
interop: $(STAMP) $(INTEROP_STAMP) $(INTEROP_NODE)/.installed
	$(BIN)/python -m tests.interop.run --logs $(INTEROP_NODE)/logs
