# The two commands of the README: `make run` and `make test`. Each installs what is missing first.
.PHONY: setup build run test test-release test-asan test-tsan bench clean

PRESET ?= release
DATA ?= ./data
LISTEN ?= 127.0.0.1:8080

setup:
	@scripts/setup

build: setup
	@cmake --preset $(PRESET) >/dev/null
	@cmake --build --preset $(PRESET)

# TLS: make run TLS_CERT=cert.pem TLS_KEY=key.pem (docs/operations.md, "TLS").
TLS_CERT ?=
TLS_KEY ?=
run: build
	build/bin/parleyd --listen $(LISTEN) --data $(DATA) \
	  $(if $(TLS_CERT),--tls-cert $(TLS_CERT) --tls-key $(TLS_KEY))

# Every test, in the release build, again under AddressSanitizer + UBSan, and again under
# ThreadSanitizer (all but the benchmark's smoke run, whose timing TSan distorts). The two
# sanitizer builds carry line tables only (-g1: every report still names file and line) and
# TSan's is optimized at -O1 (CMakePresets.json): CI builds all three from cold on 2 cores
# within its 90 minutes, and those two flags take 15 % (ASan) and ~40 % (TSan) off the
# compile (docs/architecture.md, the "Tests" item).
test: test-release test-asan test-tsan

test-release: setup
	@cmake --preset release >/dev/null
	@cmake --build --preset release
	ctest --preset release

test-asan: setup
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan
	ctest --preset asan

test-tsan: setup
	@cmake --preset tsan >/dev/null
	@cmake --build --preset tsan
	ctest --preset tsan

# A quick run of every parley-bench scenario; results (JSON, PNG) in bench/results/. Then
# what end-to-end encryption costs a client (Google Benchmark, against the symmetric core).
bench: build
	build/bin/parley-bench --quick --out bench/results
	build/bin/parley-e2ee-bench --benchmark_min_time=0.2 \
	  --benchmark_out=bench/results/e2ee.json --benchmark_out_format=json

clean:
	rm -rf build
