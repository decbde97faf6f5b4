# tide: one hand-written Makefile.
#
#   make deps    install the Debian packages the build needs and build the
#                pinned librdkafka (safe to run twice; quick when all is there)
#   make         build build/tide and build/lua/tide/core.so
#   make test    C tests and every busted tier; ends with "N passed, N failed"
#   make run     a short demo on the development broker
#   make bench   tide against plain librdkafka programs, in one run
#   make chaos   tide under random faults for CHAOS_MINUTES (default 10), then
#                a check of its outputs: lost records, duplicates, order
#   make store-bench  the state store alone (seconds): to judge a change to it
#
# Switches: V=1 (show commands), SANITIZER=address|undefined, BUILD=dir.

BUILD     ?= build
DEPS      := $(BUILD)/deps
SANITIZER ?=

RDK_VERSION := 2.15.1
RDK_NPM     := @confluentinc/kafka-javascript@1.10.1
RDK_TGZ     := $(DEPS)/confluentinc-kafka-javascript-1.10.1.tgz
RDK_SHA512  := KVePUBn21EqCVP9mfxzEuM3SYJHHEF7X+iiC2e43QQgDSyEaksInmCGooT3w5q+cNAdkSCrK71j0ICfqoSqZLw==
RDK_PREFIX  := $(abspath $(DEPS))/librdkafka-$(RDK_VERSION)
RDK_STAMP   := $(RDK_PREFIX)/lib/librdkafka.a

APT_PACKAGES := build-essential pkg-config libluajit2-5.1-dev luajit2 libmicrohttpd-dev \
	librocksdb-dev lua-busted lua-cjson libssl-dev zlib1g-dev libzstd-dev \
	liblz4-dev openssl ca-certificates curl lua-socket chromium \
	libavro-dev libcurl4-openssl-dev

ifeq ($(V),1)
Q :=
else
Q := @
endif

# librdkafka: an installed one >= 2.15 when pkg-config finds it, else ours.
RDK_SYSTEM := $(shell pkg-config --atleast-version=2.15 rdkafka 2>/dev/null && echo yes)
ifeq ($(RDK_SYSTEM),yes)
RDK_CFLAGS := $(patsubst -I%,-isystem %,$(shell pkg-config --cflags rdkafka))
RDK_LIBS   := $(shell pkg-config --libs rdkafka)
RDK_DEP    :=
else
RDK_CFLAGS := -isystem $(RDK_PREFIX)/include
RDK_LIBS   := $(RDK_PREFIX)/lib/librdkafka.a -lssl -lcrypto -lzstd -llz4 -lz -lm -ldl -lpthread -lrt
RDK_DEP    := $(RDK_STAMP)
endif

LUA_CFLAGS := $(shell pkg-config --cflags luajit 2>/dev/null)
# Avro (avro-c) and the schema registry's HTTP client (libcurl)
SERDE_LIBS := -lavro -lcurl
LUA_LIBS   := $(shell pkg-config --libs luajit 2>/dev/null)

# libmicrohttpd, the admin server's HTTP (Debian's libmicrohttpd-dev).
MHD_CFLAGS := $(patsubst -I%,-isystem %,$(shell pkg-config --cflags libmicrohttpd 2>/dev/null))
MHD_LIBS   := $(shell pkg-config --libs libmicrohttpd 2>/dev/null)

WARNINGS := \
	-Wall \
	-Wextra \
	-Wshadow \
	-Wpointer-arith \
	-Wstrict-prototypes \
	-Wmissing-prototypes \
	-Werror=implicit-function-declaration \
	-Werror=int-conversion \
	-Werror=incompatible-pointer-types \
	-Wno-unused-parameter

CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 -fPIC $(WARNINGS) -MMD -MP
CPPFLAGS += -Icore -Ibindings -I$(BUILD)/gen -D_GNU_SOURCE
# librocksdb is loaded when a store is first opened (core/rdb.c), by the
# name its runtime package installs.
ROCKSDB_SONAME := $(shell objdump -p "$$($(CC) -print-file-name=librocksdb.so)" 2>/dev/null | \
	awk '/SONAME/ { print $$2 }')
CPPFLAGS += -DTIDE_ROCKSDB_SONAME='"$(or $(ROCKSDB_SONAME),librocksdb.so)"'
LDFLAGS  += -Wl,-E
ifneq ($(SANITIZER),)
CFLAGS  += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZER)
endif

SCRIPTS   := $(sort $(wildcard scripts/tide/*.lua))
GEN       := $(BUILD)/gen/embedded.c
ENGINE_SRC := core/sink.c core/skiplist.c core/state.c core/store.c core/rdb.c core/avro_codec.c core/httpc.c
BIND_SRC  := bindings/lua_call.c bindings/core.c bindings/heap.c bindings/guard.c $(ENGINE_SRC)
HOST_SRC  := $(sort $(wildcard host/*.c)) bindings/runtime.c bindings/jsonl.c bindings/avro_tool.c $(BIND_SRC)
HOST_OBJ  := $(patsubst %.c,$(BUILD)/obj/%.o,$(HOST_SRC)) $(BUILD)/obj/gen/embedded.o \
	$(BUILD)/obj/gen/status_page.o
CORE_OBJ  := $(patsubst %.c,$(BUILD)/obj/%.o,$(BIND_SRC)) $(BUILD)/obj/gen/embedded.o
BENCH_BIN := $(BUILD)/bench/plain_consume $(BUILD)/bench/plain_transform $(BUILD)/bench/failover_probe
CTEST_BIN := $(BUILD)/test/test_sink $(BUILD)/test/test_config $(BUILD)/test/test_http \
	$(BUILD)/test/test_group $(BUILD)/test/test_router \
	$(BUILD)/test/test_store $(BUILD)/test/test_runtime
FIXTURES  := $(BUILD)/test/http_fixture
BROWSER_DEPS := spec/05-browser/node_modules/.package-lock.json
AVRO_DEPS := spec/avro/node_modules/.package-lock.json

TIDE := $(BUILD)/tide
CORE := $(BUILD)/lua/tide/core.so

.PHONY: all deps check-deps test _test bench _bench store-bench run _run demo _demo clean valgrind core
.DEFAULT_GOAL := all

all: check-deps $(TIDE) $(CORE)
core: $(CORE)
	$(Q)test -n "$(LUA_CFLAGS)" || { echo "tide: LuaJIT headers missing (libluajit2-5.1-dev)" >&2; exit 1; }

check-deps:
	@if [ -z "$(LUA_CFLAGS)" ] || [ -z "$(MHD_LIBS)" ] || { [ "$(RDK_SYSTEM)" != yes ] && [ ! -f $(RDK_STAMP) ]; }; then \
		echo "tide: build dependencies are missing; run 'make deps' first" >&2; exit 1; fi

# ---------------------------------------------------------------- deps
deps:
	$(Q)missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$(echo $$missing | sed 's/^/ /')"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	else echo "deps: Debian packages present"; fi
	$(Q)command -v npm >/dev/null 2>&1 || { echo "deps: installing npm"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm; }
	$(Q)if [ "$$(pkg-config --atleast-version=2.15 rdkafka 2>/dev/null && echo yes)" = yes ]; then \
		echo "deps: using installed librdkafka $$(pkg-config --modversion rdkafka)"; \
	else $(MAKE) --no-print-directory $(RDK_STAMP); fi
	$(Q)$(MAKE) --no-print-directory $(BROWSER_DEPS) $(AVRO_DEPS)

# playwright-core for the browser tests, pinned by package-lock.json; it
# drives Debian's chromium and downloads no browser of its own. 1.61 is the
# last release that runs on Node 18, Debian 12's, which deps installs where
# the machine has no npm (1.62 needs Node 20: both browser files failed).
$(BROWSER_DEPS): spec/05-browser/package.json spec/05-browser/package-lock.json
	@echo "deps: installing spec/05-browser (playwright-core)"
	$(Q)cd spec/05-browser && npm ci --silent --no-audit --no-fund

# avsc, an independent Avro implementation, for the interoperability tests
# (spec/avro), pinned by package-lock.json.
$(AVRO_DEPS): spec/avro/package.json spec/avro/package-lock.json
	@echo "deps: installing spec/avro (avsc)"
	$(Q)cd spec/avro && npm ci --silent --no-audit --no-fund

$(RDK_TGZ):
	$(Q)mkdir -p $(DEPS)
	@echo "deps: fetching librdkafka $(RDK_VERSION) from the npm registry ($(RDK_NPM))"
	$(Q)cd $(DEPS) && npm pack --silent $(RDK_NPM) >/dev/null
	$(Q)sum=$$(openssl dgst -sha512 -binary $@ | base64 -w0); \
	if [ "$$sum" != "$(RDK_SHA512)" ]; then \
		echo "deps: sha512 mismatch for $@: $$sum" >&2; rm -f $@; exit 1; fi

$(RDK_STAMP): $(RDK_TGZ)
	@echo "deps: building librdkafka $(RDK_VERSION) (about a minute)"
	$(Q)rm -rf $(DEPS)/src && mkdir -p $(DEPS)/src
	$(Q)tar -xzf $(RDK_TGZ) -C $(DEPS)/src package/deps/librdkafka
	$(Q)cd $(DEPS)/src/package/deps/librdkafka && \
		./configure --prefix=$(RDK_PREFIX) --no-download --no-cache --enable-zlib \
			--enable-zstd --enable-ssl --enable-lz4-ext --disable-gssapi --disable-curl \
			>$(abspath $(DEPS))/librdkafka-configure.log 2>&1 && \
		$(MAKE) -j2 libs >$(abspath $(DEPS))/librdkafka-build.log 2>&1 && \
		$(MAKE) install-subdirs >$(abspath $(DEPS))/librdkafka-install.log 2>&1 \
		|| { echo "deps: librdkafka build failed, see $(DEPS)/librdkafka-*.log" >&2; exit 1; }
	$(Q)rm -rf $(DEPS)/src
	$(Q)touch $@

# ---------------------------------------------------------------- build
$(GEN): bindings/embed.lua core/tide_ffi.h $(SCRIPTS)
	$(Q)mkdir -p $(@D)
	@echo "  GEN   $@"
	$(Q)luajit bindings/embed.lua $@ core/tide_ffi.h $(SCRIPTS)

$(BUILD)/gen/status_page.c: bindings/embed.lua host/status_page.html
	$(Q)mkdir -p $(@D)
	@echo "  GEN   $@"
	$(Q)luajit bindings/embed.lua --symbol tide_status_page_html $@ host/status_page.html

$(BUILD)/obj/gen/status_page.o: $(BUILD)/gen/status_page.c
	$(Q)mkdir -p $(@D)
	@echo "  CC    $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/gen/embedded.o: $(GEN)
	$(Q)mkdir -p $(@D)
	@echo "  CC    $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(LUA_CFLAGS) -Wno-missing-prototypes -c $< -o $@

# bindings/ and core/ need no librdkafka: tide.core builds without it (luarocks make).
$(BUILD)/obj/bindings/%.o: bindings/%.c
	$(Q)mkdir -p $(@D)
	@echo "  CC    $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(LUA_CFLAGS) -c $< -o $@

$(BUILD)/obj/core/%.o: core/%.c
	$(Q)mkdir -p $(@D)
	@echo "  CC    $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.c | $(RDK_DEP)
	$(Q)mkdir -p $(@D)
	@echo "  CC    $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(LUA_CFLAGS) $(RDK_CFLAGS) $(MHD_CFLAGS) -c $< -o $@

$(TIDE): $(HOST_OBJ)
	@echo "  LINK  $@"
	$(Q)$(CC) $(LDFLAGS) $^ -o $@ $(LUA_LIBS) $(RDK_LIBS) $(MHD_LIBS) $(SERDE_LIBS) -ldl -lpthread

$(CORE): $(CORE_OBJ)
	$(Q)mkdir -p $(@D)
	@echo "  LINK  $@"
	$(Q)$(CC) -shared $(LDFLAGS) $^ -o $@ $(SERDE_LIBS) -ldl -lpthread

$(BUILD)/bench/%: bench/%.c | $(RDK_DEP)
	$(Q)mkdir -p $(@D)
	@echo "  CC    $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(RDK_CFLAGS) $< -o $@ $(RDK_LIBS)

$(BUILD)/test/%: spec/c/%.c $(filter-out $(BUILD)/obj/host/main.o,$(HOST_OBJ))
	$(Q)mkdir -p $(@D)
	@echo "  CC    $<"
	$(Q)$(CC) $(CPPFLAGS) -Ihost $(CFLAGS) $(LUA_CFLAGS) $(RDK_CFLAGS) $(LDFLAGS) $(filter %.c %.o,$^) -o $@ $(LUA_LIBS) $(RDK_LIBS) $(MHD_LIBS) $(SERDE_LIBS) -lrocksdb -ldl -lpthread

-include $(shell find $(BUILD)/obj $(BUILD)/test -name '*.d' 2>/dev/null)

# ---------------------------------------------------------------- test
LUA_ENV := LUA_PATH="$(CURDIR)/scripts/?.lua;$(CURDIR)/scripts/?/init.lua;$(CURDIR)/spec/?.lua;;" \
	LUA_CPATH="$(abspath $(BUILD))/lua/?.so;;" TIDE_TEST_BIN="$(abspath $(TIDE))" \
	TIDE_TEST_TMP="$(abspath $(BUILD))/test-tmp"

# test, run and bench install what is missing first (quick when all is
# there), then re-read this Makefile so pkg-config sees what deps installed.
test run bench demo:
	$(Q)$(MAKE) --no-print-directory deps >/dev/null
	$(Q)$(MAKE) --no-print-directory _$@

_test: all $(CTEST_BIN) $(FIXTURES) $(BROWSER_DEPS) $(AVRO_DEPS)
	$(Q)rm -rf $(BUILD)/test-results $(BUILD)/test-tmp && mkdir -p $(BUILD)/test-results $(BUILD)/test-tmp
	$(Q)for t in $(CTEST_BIN); do c=$(BUILD)/test-results/$$(basename $$t).counts; \
		echo "0 1" > $$c; $$t $$c > $$c.out || echo "FAIL - $$t: exit $$?" >> $$c.out; cat $$c.out; done
	$(Q)echo "0 1" > $(BUILD)/test-results/busted.counts; $(LUA_ENV) TIDE_TEST_COUNTS="$(abspath $(BUILD))/test-results/busted.counts" \
		luajit spec/busted_luajit.lua -o spec/helpers/output.lua spec/01-unit spec/02-bindings spec/03-detectors spec/04-integration \
		2>&1 | tee $(BUILD)/test-results/busted.out
	$(Q)echo "0 1" > $(BUILD)/test-results/browser.counts; \
	TIDE_HTTP_FIXTURE="$(abspath $(BUILD)/test/http_fixture)" TIDE_BIN="$(abspath $(TIDE))" node --test \
		--test-reporter=spec --test-reporter-destination=stdout \
		--test-reporter=./spec/05-browser/counts_reporter.mjs \
		--test-reporter-destination=$(BUILD)/test-results/browser.out \
		spec/05-browser/status_page_test.mjs spec/05-browser/status_page_live_test.mjs \
		2>&1 | tee $(BUILD)/test-results/browser.log; \
	if [ -s $(BUILD)/test-results/browser.out ]; then \
		mv $(BUILD)/test-results/browser.out $(BUILD)/test-results/browser.counts; fi
	$(Q)grep -h -e "^FAIL - " -e "^✖ " $(BUILD)/test-results/*.out $(BUILD)/test-results/browser.log \
		2>/dev/null | sed '1i\
failures (each reported in full above):' || true
	$(Q)cat $(BUILD)/test-results/*.counts | awk '{p+=$$1; f+=$$2} END {printf "%d passed, %d failed\n", p, f; exit (f > 0 || p == 0)}'

valgrind: all
	$(Q)$(LUA_ENV) TIDE_TEST_WRAP="valgrind --error-exitcode=99 --leak-check=full -q" \
		luajit spec/busted_luajit.lua spec/04-integration

# ---------------------------------------------------------------- run, bench
_run: all
	$(Q)sh examples/demo.sh $(TIDE)

_demo: all
	$(Q)sh examples/fraud/demo.sh $(TIDE)

_bench: all $(BENCH_BIN)
	$(Q)sh bench/run.sh $(TIDE) $(BUILD)/bench

# The state store alone, no Kafka nor Lua (bench/store_bench.c): seconds, not minutes.
$(BUILD)/bench/store_bench: bench/store_bench.c core/store.c core/skiplist.c
	$(Q)mkdir -p $(@D)
	@echo "  CC    $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $^ -o $@ -lrocksdb

store-bench: $(BUILD)/bench/store_bench
	$(Q)$(BUILD)/bench/store_bench $(BUILD)/store-bench

# ---------------------------------------------------------------- chaos
# Never part of make test. CHAOS_ARGS passes more to spec/chaos/run.lua, e.g.
# CHAOS_ARGS="--seed 42 -D processing.guarantee=exactly_once_v2".
CHAOS_MINUTES ?= 10
CHAOS_ARGS ?=
.PHONY: chaos _chaos

chaos:
	$(Q)$(MAKE) --no-print-directory deps >/dev/null
	$(Q)$(MAKE) --no-print-directory _chaos

_chaos: all
	$(Q)rm -rf $(BUILD)/chaos && mkdir -p $(BUILD)/chaos
	$(Q)$(LUA_ENV) TIDE_TEST_TMP="$(abspath $(BUILD))/chaos" luajit spec/chaos/run.lua \
		--minutes $(CHAOS_MINUTES) $(CHAOS_ARGS)

clean:
	rm -rf $(BUILD)/obj $(BUILD)/gen $(BUILD)/lua $(BUILD)/test $(BUILD)/bench $(TIDE) \
		$(BUILD)/test-results $(BUILD)/test-tmp $(BUILD)/chaos
