# dmfexport — common tasks. `make demo` and `make test` are all a fresh machine needs.
GO        ?= go
BIN       ?= bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS   := -X main.Version=$(VERSION)
FUZZTIME  ?= 30s

.PHONY: all build demo test vet lint fmt fuzz clean scale image

all: build

## build: the dmfexport and dmfsim binaries into ./bin
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

## demo: run the demo export (in-process F&O simulator, local store, local RabbitMQ) and land it in SQLite
demo:
	$(GO) run -ldflags '$(LDFLAGS)' ./cmd/dmfexport demo --config configs/demo.yaml

## image: the container image the Dockerfile describes, built without a Docker daemon (static binary,
## CA certificates, non-root user, no shell): bin/dmfexport-image.tar (docker load -i) and
## bin/dmfexport-oci (an OCI layout: skopeo copy oci:bin/dmfexport-oci docker://REGISTRY/dmfexport:TAG)
image:
	$(GO) run ./cmd/dmfimage -version $(VERSION) -revision '$(REVISION)' -tar $(BIN)/dmfexport-image.tar -oci $(BIN)/dmfexport-oci

## test: start what the tests need (RabbitMQ, PostgreSQL, Azurite), vet, lint, and run every test with -race
## (without -race, saying so, when no C compiler is found: -race needs cgo)
test:
	bash .ci/test.sh

## status-page.png: the screenshot of the status page in the docs, taken by the browser test during a
## run against the simulator (needs chromium: apt-get install chromium)
.PHONY: status-page.png
status-page.png:
	DMFEXPORT_REQUIRE_BROWSER=1 $(GO) test -count=1 -run '^TestStatusPageBrowser$$' ./cmd/dmfexport -status-page-png $(CURDIR)/docs/status-page.png

## vet: go vet and gofmt check only
vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './.tools/*')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## lint: golangci-lint (the version pinned below, installed into .tools/) with .golangci.yml, over
## every package including the files built only with -tags faults
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := .tools/golangci-lint-$(GOLANGCI_LINT_VERSION)
lint: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...

$(GOLANGCI_LINT):
	@mkdir -p .tools
	GOBIN=$(CURDIR)/.tools/golangci-lint-install $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv .tools/golangci-lint-install/golangci-lint $@
	rmdir .tools/golangci-lint-install

## fuzz: run every fuzz target for FUZZTIME each
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf $(BIN) out dmfexport-data

## bench: every figure of the performance targets in one run, each part on the same generated files:
##   1. the whole pipeline end to end (simulator → dmfexport trigger → store → RabbitMQ): per step wall
##      time, CPU seconds, rows/s and peak RSS, against a -before build when given;
##   2. the publish step of the wide and narrow CSV against two ceilings: dmfexport's own publisher
##      with messages of the same size, and a bare amqp091 publisher of the same messages (16 in flight);
##   3. the XLSX entity on one core (GOMAXPROCS=1): every cell an inline string as F&O writes it, then
##      the same rows with shared strings as Excel re-saves them (-xlsx-strings shared);
##   4. the wide entity uncompressed, gzip and zstd through a 100 Mbit/s link.
## The issue's sizes:
##   make bench BENCHFLAGS="-wide 100000 -narrow 1000000 -xlsx 200000 -before /tmp/dmfexport-main -stores dir,azblob"
## (-before: a binary built from another commit, run interleaved; azblob needs -azurite or DMFEXPORT_TEST_AZURITE)
.PHONY: bench bench-publish
bench:
	$(GO) build -o $(BIN)/dmfbench ./cmd/dmfbench
	$(BIN)/dmfbench -e2e $(BENCHFLAGS)
	@echo; echo "== publish step against the broker ceiling"
	$(BIN)/dmfbench -entities wide,narrow -cases parse,none,ceiling,bare $(BENCHFLAGS)
	@echo; echo "== XLSX on one core: inline strings (F&O), then shared strings (Excel)"
	GOMAXPROCS=1 $(BIN)/dmfbench -entities xlsx -cases parse,none $(BENCHFLAGS)
	GOMAXPROCS=1 $(BIN)/dmfbench -entities xlsx -xlsx-strings shared -cases parse,none $(BENCHFLAGS)
	@echo; echo "== compression through a 100 Mbit/s link"
	$(BIN)/dmfbench -entities wide -cases none,gzip,zstd -link 100Mbit $(BENCHFLAGS)

## bench-sink: the sink's figures (dmfbench -sink postgres): snapshot and upsert of the narrow (1M rows)
## and wide (100k rows) entities through the postgres backend, in 5000-row batches as published, against
## a bare COPY of the same rows and a naive consumer (one INSERT per row); rows/s, % of the COPY, × the
## naive consumer, peak RSS. Needs PostgreSQL (-database, else $DMFEXPORT_TEST_DATABASE_URL, else the local
## database test); BENCHFLAGS adds flags, e.g. BENCHFLAGS="-tries 2 -sink-cases snapshot,amqp-snapshot".
.PHONY: bench-sink
bench-sink:
	$(GO) build -o $(BIN)/dmfbench ./cmd/dmfbench
	$(BIN)/dmfbench -sink postgres -wide 100000 -narrow 1000000 $(BENCHFLAGS)

## bench-publish: publish-step figures per entity (parse+encode, publish none/gzip/zstd, broker ceiling, peak RSS)
bench-publish:
	$(GO) run ./cmd/dmfbench $(BENCHFLAGS)

## faults: the fault suite: whole runs of the built dmfexport and dmfsim against a private RabbitMQ
## node (started on its own ports; root and rabbitmq-server needed, else the node cases skip) with
## one fault per case; prints one FAULT line per case (the whole output, the processes' log lines
## a failure quotes included, in $TMPDIR/dmfexport-faults.log). DMFEXPORT_FAULTS=ci runs the CI subset.
.PHONY: faults
faults:
	bash -o pipefail -c '$(GO) test -tags faults -count=1 -v -timeout 60m ./faults/ 2>&1 | tee "$${TMPDIR:-/tmp}/dmfexport-faults.log" | grep --line-buffered -Ev "^\s*$$|^        [{d]"'

## scale: 200 exports firing in the same second against the simulator with F&O's per-user limits:
## no failure, every row published, peak RSS under 200 MiB, within 1.5x of the ideal time (printed)
scale:
	DMFEXPORT_SCALE=1 $(GO) test -run '^TestScale$$' -count=1 -v -timeout 15m ./cmd/dmfexport
