# Thin wrapper over CMake + ctest: the two everyday commands are `make run` and `make test`.
BUILD ?= build
JOBS  ?= $(shell nproc)

.PHONY: all build run test test-asan test-clang fuzz bench-train bench-data bench-dist bench-infer bench-serve bench-data-efficiency setup clean

all: build

setup:
	bash scripts/setup.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

run: setup build
	bash scripts/run_demo.sh $(BUILD)

test: setup build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

test-asan:
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSPRY_SANITIZE=ON -DSPRY_ONEDNN=OFF
	cmake --build build-asan -j $(JOBS)
	ctest --test-dir build-asan --output-on-failure -j $(JOBS) -LE portability

test-clang:
	CC=clang cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build-clang -j $(JOBS)
	ctest --test-dir build-clang --output-on-failure -j $(JOBS) -LE portability

fuzz:
	bash scripts/fuzz.sh 60

bench-train: build
	bash bench/train.sh $(BUILD)

clean:
	rm -rf $(BUILD) build-asan build-clang

# Data pipeline benchmarks: tokenizer throughput vs gpt-3-encoder, prepare throughput, loader
# time per batch against a training step.
bench-serve: build
	bash bench/serve.sh $(BUILD)

# the data-efficiency reproduction (docs/data_efficiency.md): SPRY_DE_EPOCHS (3) sets the budget
bench-data-efficiency: build
	/usr/bin/python3 bench/data_efficiency.py $(BUILD)

bench-infer: build
	bash bench/infer.sh $(BUILD)

bench-dist: build
	bash bench/dist.sh $(BUILD)

bench-data: build
	bash bench/data.sh $(BUILD)
