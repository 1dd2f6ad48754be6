# Entry points that work on a fresh machine with only Node/npm: they install what is missing.
SHELL := /bin/bash
DENO_VERSION := 2.9.6
# npm's global bin is where `npm install -g deno` puts deno.
export PATH := $(shell npm prefix -g 2>/dev/null)/bin:$(HOME)/.deno/bin:/usr/local/bin:$(PATH):/usr/sbin:/sbin

.PHONY: test demo demo-cf build release deps check lint fmt bench lab-down

deps:
	@bash scripts/install_deps.sh $(DENO_VERSION)

test: deps
	deno task test

demo: deps
	deno run -A lab/demo.ts

# A CF app with 3 instances on 2 Diego cells, captured with pcap-cf; leaves demo-cf.pcapng.
demo-cf: deps
	deno run -A lab/demo_cf.ts

check: deps
	deno task check

lint: deps
	deno lint

fmt: deps
	deno fmt

bench:
	@bash scripts/install_deps.sh $(DENO_VERSION) bench
	deno task bench

build: deps
	sh build.sh

# dist/release/: the BOSH release directory with the compiled executable as its blob.
release: deps
	sh scripts/make_release.sh

lab-down: deps
	deno task lab down
