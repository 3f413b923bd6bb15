# The two commands of the README: `make run` and `make test`. Each installs what is missing first.
.PHONY: setup build run test test-release test-asan bench clean

PRESET ?= release
DATA ?= ./data
LISTEN ?= 127.0.0.1:8080

setup:
	@scripts/setup

build: setup
	@cmake --preset $(PRESET) >/dev/null
	@cmake --build --preset $(PRESET)

run: build
	build/bin/parleyd --listen $(LISTEN) --data $(DATA)

# Every test, in the release build and again under AddressSanitizer + UBSan.
test: test-release test-asan

test-release: setup
	@cmake --preset release >/dev/null
	@cmake --build --preset release
	ctest --preset release

test-asan: setup
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan
	ctest --preset asan

# A quick run of every parley-bench scenario; results (JSON, PNG) in bench/results/. Then
# what end-to-end encryption costs a client (Google Benchmark, against the symmetric core).
bench: build
	build/bin/parley-bench --quick --out bench/results
	build/bin/parley-e2ee-bench --benchmark_min_time=0.2 \
	  --benchmark_out=bench/results/e2ee.json --benchmark_out_format=json

clean:
	rm -rf build
