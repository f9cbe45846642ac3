# credits: prepaid credit billing inside PostgreSQL (PGXS build).
#
#   make && make install          build and install into the server of PG_CONFIG
#   make installcheck             regress, isolation and TAP suites, each on its own temp server
#   test/run_all.sh               the whole suite from scratch (what CI runs)

EXTENSION  = credits
# The version is written once, as default_version in credits.control.
EXTVERSION = $(shell sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" $(EXTENSION).control)

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config

MODULE_big = credits
OBJS       = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
PG_CFLAGS  = -Wall -Wextra -Werror -Wno-unused-parameter

# The newest version's install script is assembled from sql/install/*.sql in file-name order:
# type, ledger, metering, periodic jobs, views, roles.  Released versions are frozen:
# sql/credits--0.1.0.sql is what 0.1.0 installed, byte for byte, and every later version
# reaches a database through the upgrade scripts sql/credits--OLD--NEW.sql.
DATA_built    = $(EXTENSION)--$(EXTVERSION).sql
DATA          = $(filter-out sql/$(EXTENSION)--$(EXTVERSION).sql,$(wildcard sql/$(EXTENSION)--*.sql))
INSTALL_PARTS = $(sort $(wildcard sql/install/*.sql))

# ---- credits_router: the PL/Proxy router (sql/router/, README "Scaling out") -----------------
# A second extension of this tree, for the router server in front of shards running credits.
# Its control file is made from sql/router/credits_router.control.in with credits' version, and
# its script is generated from the catalogue of the credits just built, by sql/router/build.sh
# (a throwaway server on a private copy of the PostgreSQL installation), so that every public
# per-project function and view of credits has its twin on the router.  PGXS installs DATA and
# DATA_built files under their own names into the extension directory.
ROUTER_SCRIPT = sql/router/credits_router--$(EXTVERSION).sql
DATA_built   += sql/router/credits_router.control $(ROUTER_SCRIPT)
# ---- end credits_router ----------------------------------------------------------------------

# The regress tests, in sql/ with their outputs in expected/ (the other scripts in sql/ are
# the extension's own).
REGRESS = \
	type_io type_arith type_agg type_index \
	ledger_accounts ledger_deposits ledger_events ledger_guards ledger_verify \
	metering_instances metering_volumes metering_usage metering_deductions metering_runaway \
	zero_balance auto_recharge burn_rate schedule roles hostile_api hostile_roles comments \
	spending_limits spending_alerts volume_retention lots periodic_errors usage_days id_lookups
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

# ---- credits_router's control file and script (see the credits_router block above) ----------
sql/router/credits_router.control: sql/router/credits_router.control.in $(EXTENSION).control
	sed "s/@VERSION@/$(EXTVERSION)/" $< > $@
$(ROUTER_SCRIPT): $(EXTENSION)--$(EXTVERSION).sql $(shlib) $(wildcard sql/$(EXTENSION)--*.sql) \
                  sql/router/build.sh sql/router/head.sql sql/router/generate.sql
	sql/router/build.sh $(PG_CONFIG) $@
# ---- end credits_router ----------------------------------------------------------------------

# The three suites one by one, so that a runner can go on after a failure.
.PHONY: regresscheck isolationcheck tapcheck
regresscheck:
	$(pg_regress_installcheck) $(REGRESS_OPTS) $(REGRESS)
isolationcheck:
	$(pg_isolation_regress_installcheck) $(ISOLATION_OPTS) $(ISOLATION)
tapcheck:
	$(prove_installcheck)
