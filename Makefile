# zbmd's commands. `make test` is what CI runs (.ci/run) and what the README
# shows; each other target does what its name says.

CARGO ?= cargo
# loom builds every crate with --cfg zbmd_loom; a separate target directory
# keeps those artefacts from evicting the normal ones.
LOOM_ENV = RUSTFLAGS="--cfg zbmd_loom" CARGO_TARGET_DIR=target/loom \
           LOOM_MAX_PREEMPTIONS=$${LOOM_MAX_PREEMPTIONS:-2}

.PHONY: train test test-gpu deps disk lint fmt unit loom memcheck msrv package fuzz soak bench bench-gpu bench-train doc clean

## test: install what is missing, then lint, unit + integration + doc tests, loom models,
## zbmd-alloc under valgrind, the library crates at their MSRV and packaged, API docs
test: deps disk lint unit loom memcheck msrv package doc
	@echo "make test: all checks passed"

## train: the main job: zbmd-node train on the embedded digits (an MLP under the
## training supervisor; ARGS="--epochs 5 --faults model@10" passes options)
train: deps
	$(CARGO) run --release -p zbmd-tools --locked -- train $(ARGS)

deps:
	@scripts/install-deps.sh

# A fresh `make test` writes about 4.1 GiB under the target directory (measured
# from a clean clone), and `make msrv` about 0.5 GiB of toolchain under
# ~/.rustup the first time. Short of that, the compiler dies mid-build with a
# bus error or an internal error that does not say why; say it first.
TEST_DISK_GIB = 5
disk:
	@dir=$${CARGO_TARGET_DIR:-target}; [ -d "$$dir" ] || dir=.; \
	free=$$(df -Pk "$$dir" | awk 'NR == 2 { print int($$4 / 1048576) }'); \
	if [ "$$free" -lt $(TEST_DISK_GIB) ]; then \
	  echo "make test: warning: $$free GiB free under $$dir, a fresh build needs about $(TEST_DISK_GIB) GiB" >&2; \
	fi

## lint: formatting and clippy (default features and all of them), warnings are errors
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

## unit: unit, integration (property and stress) and doc tests, every feature on
unit:
	$(CARGO) test --workspace --all-features --locked

## test-gpu: on a machine with an NVIDIA GPU (CUDA driver installed): every zbmd-gpu
## test, including those marked `needs an NVIDIA GPU` (the CUDA conformance suite,
## NVRTC and cuBLAS, the caching pool), with Vulkan too where a Vulkan loader is
## installed, and zbmd-ml's device and training tests (tensors and a training run with
## its faults on the GPU); then the GPU benchmarks (launch overhead on CUDA, Vulkan and the CPU;
## GEMM on the CPU). It installs nothing (GPU machines may be offline) and refuses
## to run where no NVIDIA driver answers, so an ignored test never counts as passed.
GPU_FEATURES = cuda$(shell ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 ' && echo ,vulkan)
test-gpu:
	@nvidia-smi -L || { echo "make test-gpu: no NVIDIA GPU here (nvidia-smi failed)" >&2; exit 1; }
	@echo "make test-gpu: zbmd-gpu and zbmd-ml's device and training tests with features $(GPU_FEATURES), ignored tests included"
	$(CARGO) test -p zbmd-gpu --features $(GPU_FEATURES) --locked -- --include-ignored
	$(CARGO) test -p zbmd-ml --features $(GPU_FEATURES) --locked --test device --test train -- --include-ignored
	$(MAKE) bench-gpu BENCH_FEATURES=$(GPU_FEATURES)

## loom: the loom models of every lock-free structure, release mode, preemption bound 2
loom:
	$(LOOM_ENV) $(CARGO) test -p zbmd-loom-tests --release --locked

## memcheck: zbmd-alloc's unit and integration tests under valgrind memcheck,
## any error or definite leak fails (about 10 s here once built)
memcheck: deps
	$(CARGO) test -p zbmd-alloc --tests --locked --no-run
	@set -e; tests=$$($(CARGO) test -p zbmd-alloc --tests --locked --no-run \
	    --message-format=json | python3 -c 'import json, sys; \
	    [print(m["executable"]) for m in map(json.loads, sys.stdin) if m.get("executable")]'); \
	test -n "$$tests" || { echo "memcheck: no test binaries found" >&2; exit 1; }; \
	for test in $$tests; do \
	  echo "memcheck: $$test"; \
	  valgrind -q --error-exitcode=1 --leak-check=full --show-leak-kinds=definite \
	    --errors-for-leak-kinds=definite "$$test" -q; \
	done

## fuzz: every cargo-fuzz target under libFuzzer for FUZZ_SECONDS seconds each (default 60),
## one after another at nice 19. Needs a nightly toolchain (rustup toolchain install nightly)
## and cargo-fuzz (cargo install cargo-fuzz --locked); `make test` runs the stable corpus pass
## instead (zbmd-fuzz-targets' tests/corpus.rs). Inputs libFuzzer grows go to fuzz/work/<target>/
## (ignored), crashes to fuzz/artifacts/<target>/. No sanitizer (-s none): the code under test is
## safe Rust, and debug assertions with overflow checks stay on. See docs/fuzzing.md.
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null || { echo "make fuzz: needs cargo-fuzz: cargo install cargo-fuzz --locked" >&2; exit 1; }
	@rustup run nightly rustc --version >/dev/null 2>&1 || { echo "make fuzz: needs a nightly toolchain: rustup toolchain install nightly" >&2; exit 1; }
	@set -e; cd fuzz; for target in $$(cargo +nightly fuzz list); do \
	  mkdir -p work/$$target regressions/$$target; \
	  echo "make fuzz: $$target for $(FUZZ_SECONDS) s"; \
	  nice -n 19 cargo +nightly fuzz run -s none $$target "$$PWD/work/$$target" \
	    "$$PWD/corpus/$$target" "$$PWD/regressions/$$target" -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=5; \
	done

## soak: the chaos soak of the main job for an hour (tools/tests/soak.rs; `make test` runs
## it for two minutes): zbmd-node train with random actor crashes and device faults, killed
## with SIGKILL and resumed, must end with the clean run's parameters bit for bit and
## reconcile every fault with its recovery; and the library's train, run over and over in
## one process, must leave memory, threads and files at their baseline and no actor stuck.
## A failure prints its seed: ZBMD_SOAK_SEED=<seed> make soak replays the same chaos.
soak:
	ZBMD_SOAK_SECONDS=3600 $(CARGO) test --release -p zbmd-tools --test soak --locked -- --nocapture

## bench: criterion benchmarks against the peers, then the reports in bench_results/
bench:
	@scripts/install-deps.sh --bench
	$(CARGO) bench -p zbmd-benches --bench queues --locked
	python3 scripts/bench_report.py queues
	$(CARGO) bench -p zbmd-benches --bench actors --locked
	benches/erlang/run.sh bench_results/actors.erlang.jsonl
	python3 benches/actors_report.py
	$(CARGO) run --release -p zbmd-benches --example actors_plot --locked
	$(CARGO) bench -p zbmd-benches --bench supervision --locked
	benches/erlang/run_supervision.sh bench_results/supervision.erlang.jsonl
	python3 benches/supervision_report.py
	$(CARGO) bench -p zbmd-benches --bench behaviours --locked
	python3 scripts/bench_report.py behaviours --ours gen_server
	$(CARGO) bench -p zbmd-benches --bench alloc --locked
	python3 scripts/bench_report.py alloc
	$(MAKE) bench-gpu

## bench-gpu: kernel actors against direct device calls, GEMM through an actor against
## the gemm crate and numpy (OpenBLAS), on every backend compiled in and present
BENCH_FEATURES ?= vulkan
bench-gpu:
	$(CARGO) bench -p zbmd-benches --bench gpu --features $(BENCH_FEATURES) --locked
	python3 scripts/bench_report.py gpu
	benches/gemm_numpy.sh bench_results/gpu.numpy.json

## bench-train: what fault tolerance costs a training run (snapshots, recovery) and what
## the kernel-actor path costs a step; PyTorch's comparisons are benches/torch/run.sh
bench-train:
	$(CARGO) bench -p zbmd-benches --bench train_faults --locked
	python3 scripts/bench_report.py train_faults
	$(CARGO) bench -p zbmd-benches --bench train_offload --features $(BENCH_FEATURES) --locked
	python3 scripts/bench_report.py train_offload

## msrv: zbmd-rt and zbmd-alloc (the crates others link) build with the oldest Rust they
## declare (rust-version in Cargo.toml). Installs that toolchain with rustup's minimal
## profile (about 500 MB) when it is missing; where it cannot be installed (offline), says
## so and skips, so that the rest of `make test` still runs.
MSRV = $(shell sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
msrv:
	@test -n "$(MSRV)" || { echo "make msrv: no rust-version in Cargo.toml" >&2; exit 1; }
	@if ! rustup run $(MSRV) rustc --version >/dev/null 2>&1 && \
	    ! rustup toolchain install $(MSRV) --profile minimal --no-self-update; then \
	  echo "make msrv: WARNING: Rust $(MSRV) could not be installed: the MSRV check did not run" >&2; \
	else \
	  echo "make msrv: zbmd-rt and zbmd-alloc with Rust $(MSRV)"; \
	  CARGO_TARGET_DIR=target/msrv $(CARGO) +$(MSRV) check -p zbmd-rt -p zbmd-alloc --locked; \
	fi

## package: zbmd-alloc and zbmd-rt packaged as `cargo publish` would, each built from its
## package alone (scripts/check-package.sh; nothing is published)
package:
	@scripts/check-package.sh

## doc: API docs, warnings are errors
doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --all-features --no-deps --locked

clean:
	$(CARGO) clean
