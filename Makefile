# credits: prepaid credit billing inside PostgreSQL (PGXS build).
#
#   make && make install          build and install into the server of PG_CONFIG
#   make installcheck             regress, isolation and TAP suites, each on its own temp server
#   test/run_all.sh               the whole suite from scratch (what CI runs)

EXTENSION  = credits
EXTVERSION = 0.1.0

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config

MODULE_big = credits
OBJS       = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
PG_CFLAGS  = -Wall -Wextra -Werror -Wno-unused-parameter

# The install script is assembled from sql/install/*.sql in file-name order:
# type, ledger, metering, periodic jobs, views, roles.
DATA_built = $(EXTENSION)--$(EXTVERSION).sql
INSTALL_PARTS = $(sort $(wildcard sql/install/*.sql))

# Every sql/*.sql is a regress test (install parts live in sql/install/).
REGRESS      = $(sort $(basename $(notdir $(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-instance=./tmp_check --temp-config=test/conf/regress.conf \
               --load-extension=credits --encoding=UTF8

ISOLATION      = $(sort $(basename $(notdir $(wildcard test/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test --temp-instance=./tmp_check_iso \
                 --temp-config=test/conf/isolation.conf --load-extension=credits

TAP_TESTS   = 1
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))

EXTRA_CLEAN = $(DATA_built) tmp_check_iso test/fuzz/build regression.diffs regression.out

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The TAP tests' own modules (Makefile.global resets PROVE_FLAGS, so this comes after it).
PG_PROVE_FLAGS += -I test/perl

$(EXTENSION)--$(EXTVERSION).sql: $(INSTALL_PARTS)
	cat $^ > $@

# The three suites one by one, so that a runner can go on after a failure.
.PHONY: regresscheck isolationcheck tapcheck
regresscheck:
	$(pg_regress_installcheck) $(REGRESS_OPTS) $(REGRESS)
isolationcheck:
	$(pg_isolation_regress_installcheck) $(ISOLATION_OPTS) $(ISOLATION)
tapcheck:
	$(prove_installcheck)
