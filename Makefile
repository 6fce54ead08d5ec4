# estafeta build. Plain make over pkg-config; every variant builds into its own
# directory so release, sanitizer and fuzz objects never mix.
#
#   make                      release build   -> build/release/estafeta
#   make VARIANT=asan         ASan+UBSan      -> build/asan/estafeta
#   make VARIANT=fuzz fuzz    libFuzzer targets (clang) -> build/fuzz/fuzz_*
#   make unit                 unit test binaries of the chosen variant
#   make check                what scripts/test.sh runs (see README)

VARIANT ?= release
BUILD   := build/$(VARIANT)

PKGS    := libevent_core libevent_pthreads openssl libargon2 sqlite3 libunbound zlib
# ISA-L's CRC-32 (the queue's body checksum, 13x zlib's here: doc/performance.md)
# where Debian builds it; zlib's otherwise, with the same result.
ifeq ($(shell pkg-config --exists libisal 2>/dev/null && echo y),y)
  PKGS += libisal
  HAVE_ISAL := -DHAVE_ISAL
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN := -Wall -Wextra -Wformat=2 -Wshadow -Wvla -Werror \
        -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
        -Wnull-dereference -Wimplicit-fallthrough
BASE_CFLAGS := -std=c17 -D_GNU_SOURCE -g -Isrc $(WARN) $(PKG_CFLAGS) $(HAVE_ISAL)

ifeq ($(VARIANT),release)
  CC ?= cc
  VFLAGS := -O2 -D_FORTIFY_SOURCE=2 -fstack-protector-strong
else ifeq ($(VARIANT),asan)
  VFLAGS := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
            -fno-sanitize-recover=all
  VLDFLAGS := -fsanitize=address,undefined
else ifeq ($(VARIANT),fuzz)
  CC := clang
  VFLAGS := -O1 -fno-omit-frame-pointer \
            -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
  VLDFLAGS := -fsanitize=fuzzer,address,undefined
else
  $(error unknown VARIANT '$(VARIANT)': use release, asan or fuzz)
endif

CFLAGS  := $(BASE_CFLAGS) $(VFLAGS) $(EXTRA_CFLAGS)
LDFLAGS := $(VLDFLAGS) $(EXTRA_LDFLAGS)
LDLIBS  := $(PKG_LIBS) -lpthread

MODULES  := lib io proto conf queue store deliver relay smtpd pop3d estafeta
LIB_SRC  := $(filter-out src/estafeta/main.c,$(foreach m,$(MODULES),$(wildcard src/$(m)/*.c)))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(BUILD)/src/estafeta/main.o
ARCHIVE  := $(BUILD)/libestafeta.a

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/%)

FAULT_SO := $(BUILD)/libfault.so

.PHONY: all unit fuzz fault check clean
all: $(BUILD)/estafeta

$(BUILD)/estafeta: $(MAIN_OBJ) $(ARCHIVE)
	@echo "  LD    $@"
	@$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(ARCHIVE): $(LIB_OBJ)
	@rm -f $@
	@ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

unit: $(UNIT_BIN)
$(BUILD)/tests/%: tests/unit/%.c $(ARCHIVE) tests/unit/harness.h
	@mkdir -p $(dir $@)
	@echo "  TEST  $@"
	@$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(ARCHIVE) $(LDFLAGS) $(LDLIBS)

fuzz: $(FUZZ_BIN)
$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(ARCHIVE)
	@echo "  FUZZ  $@"
	@$(CC) $(CFLAGS) -o $@ $< $(ARCHIVE) $(LDFLAGS) $(LDLIBS)

fault: $(FAULT_SO)
$(FAULT_SO): tests/fault/fault.c
	@mkdir -p $(dir $@)
	cc -std=c17 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -fPIC -shared -o $@ $< -ldl

check:
	./scripts/test.sh

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d)
