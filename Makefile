# relayguard. `make run` starts the daemons on loopback with the sample
# configuration; `make test` runs every check CI runs.

GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN         := bin/relayguard
VAR         := var
UNIT_PKGS    = $(shell $(GO) list ./... | grep -v /integration)
FUZZTIME    ?= 30s

.PHONY: build run geoip test lint unit e2e fuzz bench clean

build:
	$(GO) build -o $(BIN) ./cmd/relayguard

# The free CC-BY country database, for `make run`.
geoip: $(VAR)/country.mmdb
$(VAR)/country.mmdb:
	scripts/fetch-geoip.sh $(VAR)

run: build geoip
	scripts/run.sh $(BIN) $(VAR)

test: lint unit e2e

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: the files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(STATICCHECK) ./...

unit:
	$(GO) test -race -shuffle=on -count=1 $(UNIT_PKGS)

# End-to-end: real Postfix and Dovecot (installed by the harness when
# missing; needs root for that), driven over SMTP.
e2e:
	$(GO) test -race -count=1 -timeout=10m ./integration/...

# Fuzz each parser of untrusted input for FUZZTIME; seeds live in testdata/.
FUZZERS := policyd:FuzzDecode mailaddr:FuzzDomain limits:FuzzDecodeCounters milter:FuzzServe contentfilter:FuzzSession \
	attachments:FuzzInspect attachments:FuzzLowerNoCR authpolicy:FuzzRequest dkim:FuzzSign
fuzz:
	@set -e; for f in $(FUZZERS); do \
		echo "fuzz $$f"; $(GO) test -run='^$$' -fuzz="^$${f#*:}$$" -fuzztime=$(FUZZTIME) ./$${f%%:*}/; \
	done

# policyd under a Postfix-like load next to a bare policy-protocol server
# (bench/policybench), the embedded store next to the in-memory one
# (bench/storebench), and the content filter next to a pass-through SMTP
# relay (bench/filterbench): throughput, latency percentiles, CPU and peak
# RSS, each against its baseline measured in the same run.
bench: build
	$(GO) run ./bench/policybench -relayguard $(BIN)
	$(GO) run ./bench/storebench
	$(GO) run ./bench/filterbench -relayguard $(BIN)

clean:
	rm -rf bin
