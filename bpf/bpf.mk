# bpf/bpf.mk: the BPF toolchain and code generation, included by the
# top-level Makefile (`include bpf/bpf.mk`). The generated Go files and
# objects are committed, so plain `go build` never needs any of this.

BPF_GEN_DIR := bpf

.PHONY: bpf-deps bpf-generate bpf-generate-check

# Install clang/llvm (compiler, llvm-strip for bpf2go), libbpf headers and
# bpftool, only when missing; apt-get update runs once, and only then.
bpf-deps:
	@missing=""; \
	command -v clang >/dev/null 2>&1 || missing="$$missing clang"; \
	command -v llvm-strip >/dev/null 2>&1 || missing="$$missing llvm"; \
	test -f /usr/include/bpf/bpf_helpers.h || missing="$$missing libbpf-dev"; \
	command -v bpftool >/dev/null 2>&1 || test -x /usr/sbin/bpftool || missing="$$missing bpftool"; \
	if [ -n "$$missing" ]; then \
		echo "bpf-deps: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# Recompile bpf/c/zonelb.c and regenerate zonelb_bpfel.go/zonelb_bpfeb.go.
bpf-generate: bpf-deps
	cd $(BPF_GEN_DIR) && go generate ./...

# Fails when the committed objects are stale against the C source.
bpf-generate-check: bpf-generate
	git diff --exit-code -- $(BPF_GEN_DIR)/zonelb_bpfel.go $(BPF_GEN_DIR)/zonelb_bpfeb.go $(BPF_GEN_DIR)/zonelb_bpfel.o $(BPF_GEN_DIR)/zonelb_bpfeb.o
