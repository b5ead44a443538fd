# npt — top-level build. `make` builds ./npt; `make test` runs every test and ends
# with "N passed, N failed"; `make asan` runs the loader/recipe error tests under
# AddressSanitizer; `make bench` prints the benchmark table; `make demo` runs the whole
# story offline (scripts/demo.sh); `make setup` installs the Debian packages a bare
# machine lacks.

CC       ?= cc
PYTHON   ?= /usr/bin/python3
# make bench: rounds of the stories260K and 15M-shape steps (tests/bench/run_bench.sh)
ROUNDS   ?= 3
OPT      ?= -O3 -march=native
CFLAGS   ?= $(OPT) -g
# -fno-trapping-math: npt never traps on FP exceptions (it checks values with isfinite),
# and it lets GCC if-convert the selects in util/fastmath.h so elementwise loops vectorize.
# NaN and Inf semantics are untouched (no -ffast-math).
# -ffp-contract=fast: -std=c11 turns GCC's contraction of a * b + c into one FMA off; the
# elementwise loops (the expf polynomial above all) then take twice the instructions.
CFLAGS   += -std=c11 -D_GNU_SOURCE -fno-trapping-math -ffp-contract=fast -Wall -Wextra -Wno-unused-parameter -fopenmp \
            -I/usr/include/x86_64-linux-gnu/openblas-openmp -I/usr/include/hdf5/serial -I/usr/include/cjson \
            -I/usr/lib/x86_64-linux-gnu/openmpi/include -I.
LDLIBS   += $(EXTRA_LDFLAGS) -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp \
            -L/usr/lib/x86_64-linux-gnu/hdf5/serial -L/usr/lib/x86_64-linux-gnu/openmpi/lib \
            -lopenblas -lhdf5 -lcjson -lmpi -lm -fopenmp

BUILD    ?= build
NPT_BIN  ?= npt
LIB_SRCS := $(wildcard util/*.c model/*.c data/*.c optim/*.c train/*.c)
CLI_SRCS := $(wildcard cli/*.c)
TEST_SRCS := $(wildcard tests/test_*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CLI_OBJS := $(CLI_SRCS:%.c=$(BUILD)/%.o)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
HEADERS  := $(wildcard util/*.h model/*.h data/*.h optim/*.h train/*.h cli/*.h tests/*.h)

.PHONY: all test asan bench demo setup clean
all: $(NPT_BIN)

$(BUILD)/.deps-ok:
	@sh scripts/setup.sh --check-build || sh scripts/setup.sh
	@mkdir -p $(BUILD) && touch $@

$(BUILD)/%.o: %.c $(HEADERS) | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libnpt.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(NPT_BIN): $(CLI_OBJS) $(BUILD)/libnpt.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJS) $(BUILD)/libnpt.a $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/libnpt.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libnpt.a $(LDLIBS)

# bench only: the LD_PRELOAD census of a step's sgemm calls (tests/bench/sgemm_census.c)
$(BUILD)/tests/bench/sgemm_census.so: tests/bench/sgemm_census.c | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -fPIC -o $@ $< -lpthread

test: $(NPT_BIN) $(TEST_BINS)
	@sh scripts/setup.sh --check-test || sh scripts/setup.sh
	@PYTHON=$(PYTHON) BUILD=$(BUILD) NPT=./$(NPT_BIN) sh tests/run_tests.sh

# Loader and recipe error paths under AddressSanitizer + UBSan, in a separate tree.
asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -fsanitize=address,undefined -fno-omit-frame-pointer" \
	    EXTRA_LDFLAGS="-fsanitize=address,undefined" \
	    NPT_BIN=build-asan/npt build-asan/npt $(patsubst $(BUILD)/%,build-asan/%,$(TEST_BINS))
	@PYTHON=$(PYTHON) BUILD=build-asan NPT=build-asan/npt sh tests/run_tests.sh --asan

# The whole story offline on a bare Debian machine (scripts/demo.sh): packages, build,
# corpus, a byte-level Llama trained from scratch and exported as HF, safe NPT
# distillation, eval, inspect + loss plot, generation side by side; all in demo-out/.
demo:
	sh scripts/demo.sh

bench: $(NPT_BIN) $(TEST_BINS) $(BUILD)/tests/bench/bench_step $(BUILD)/tests/bench/sgemm_census.so
	@PYTHON=$(PYTHON) BUILD=$(BUILD) NPT=./$(NPT_BIN) ROUNDS=$(ROUNDS) sh tests/bench/run_bench.sh

setup:
	sh scripts/setup.sh

clean:
	rm -rf build build-asan npt
