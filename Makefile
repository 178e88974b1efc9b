# regd's everyday commands. `make test` is exactly what CI runs (.ci/run).

GO    ?= go
GOFMT ?= $(shell $(GO) env GOROOT)/bin/gofmt

# The version baked into bin/regd; empty (and then regd reports the module
# version) when git is missing or this is not a git checkout.
VERSION ?= $(shell command -v git >/dev/null 2>&1 && git describe --always --dirty 2>/dev/null)
LDFLAGS := $(if $(VERSION),-ldflags "-X main.version=$(VERSION)")

.DEFAULT_GOAL := build
.PHONY: bench-micro build run test test-unit test-e2e lint bench cluster clean screenshots

build:
	$(GO) build $(LDFLAGS) -o bin/regd ./cmd/regd

# Dev mode: a single-node registry, REST on 127.0.0.1:8080, data in ./default.regd.
run: build
	./bin/regd

# Everything CI runs: lint, then unit, integration and end-to-end tests.
test: lint
	$(GO) test -race -count=1 -tags e2e -timeout 20m ./...

# Unit tests only: -short skips the in-process clusters.
test-unit:
	$(GO) test -race -short ./...

# End-to-end tests: the real binary, real processes, real signals.
test-e2e:
	$(GO) test -race -count=1 -tags e2e -run E2E -timeout 15m ./...

# gofmt, go vet, the import rules (api, dns, ui and cli must not pull in etcd's server
# code, checks no etcd at all, and nothing may import the command), and the error codes: one list
# (registry/errors.go), never a literal code elsewhere, every code documented
# (api/errcodes_test.go).
lint:
	@files=$$($(GOFMT) -l .); \
	if [ -n "$$files" ]; then \
		echo "lint: these files are not gofmt-ed (run gofmt -w on them):"; \
		echo "$$files"; \
		exit 1; \
	fi
	$(GO) vet -tags e2e ./...
	@for pkg in ./api ./dns ./ui ./cli; do \
		deps=$$($(GO) list -deps $$pkg) || exit 1; \
		bad=$$(echo "$$deps" | grep '^go\.etcd\.io/etcd/server' || true); \
		if [ -n "$$bad" ]; then \
			echo "lint: $$pkg must not depend on go.etcd.io/etcd/server (only node/ embeds etcd); it pulls in:"; \
			echo "$$bad"; \
			exit 1; \
		fi; \
	done
	@bad=$$($(GO) list -deps ./checks | grep '^go\.etcd\.io/' || true); \
	if [ -n "$$bad" ]; then \
		echo "lint: ./checks (the health checks' probes) must not depend on etcd; it pulls in:"; \
		echo "$$bad"; \
		exit 1; \
	fi
	@imports=$$($(GO) list -tags e2e -f '{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}' ./...) || exit 1; \
	bad=$$(echo "$$imports" | awk '{ for (i = 2; i <= NF; i++) if ($$i ~ /^github\.com\/regd\/regd\/cmd(\/|$$)/) print $$1 " imports " $$i }'); \
	if [ -n "$$bad" ]; then \
		echo "lint: no package may import github.com/regd/regd/cmd/...:"; \
		echo "$$bad"; \
		exit 1; \
	fi
	$(GO) test -count=1 -run '^TestErrorCodes' ./api/

# Load runs against 1- and 3-node clusters, beside etcd's own JSON gateway;
# writes docs/benchmarks.md (about 10 minutes; BENCH_DURATION shortens it).
bench:
	scripts/bench.sh

# Go micro-benchmarks of the hot paths.
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./registry/ ./api/

# PNGs of each page of the web UI, as docs/ui/*.png (the README shows
# them): a three-node cluster in-process, driven by headless Chromium.
screenshots:
	REGD_UI_SCREENSHOTS=$(CURDIR)/docs/ui $(GO) test -count=1 -run '^TestScreenshots$$' -v ./ui/

# A three-node cluster on loopback ports; `scripts/cluster3.sh stop` ends it.
cluster: build
	scripts/cluster3.sh start

clean:
	rm -rf bin
