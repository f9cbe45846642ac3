/*
 * zero_balance.c — the zero-balance trigger in C, kept for the scripts that name it: a
 * database still at 0.1.0 (credits_zero_balance, 0.1.0's rule) and a step of the update to
 * 0.2.0 (credits_zero_balance_lots, the rule with credit lots), which then replaces the
 * triggers with plpgsql ones (sql/install/44_zero_balance.sql): this C only called SQL back
 * through SPI, so it added two crossings of the language boundary and no speed (the WHEN
 * clauses keep it off the hot path).  0.2.0's plpgsql triggers follow the rule described here.
 *
 * accounts.depleted records that zero-balance enforcement is in force.  Two row triggers on
 * credits.accounts, both this function, keep it and act on it (sql/install/44_zero_balance.sql
 * gives each a WHEN clause, so an ordinary balance change never calls in here):
 *
 *   BEFORE UPDATE  decides the flag: a balance that reaches zero from above sets it (an
 *                  account never funded has not reached zero); a deposit or grant into a
 *                  depleted account clears it once something that may pay for instances or
 *                  volumes is left of its credit lots after the usage accrued and not yet
 *                  deducted (credits._lift_threshold; without grants or refunds: once the
 *                  balance minus that usage is positive again).
 *   AFTER UPDATE   acts on a change of the flag, in the same transaction: when set, running
 *                  instances are terminated, available volumes made inaccessible and the events
 *                  queued (credits._cut_off); when cleared, inaccessible volumes become
 *                  available again (credits._restore_volumes).
 *
 * The balance check sets the flag itself when accrued usage has used up a positive balance.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/rel.h"

static SPIPlanPtr cut_off_plan = NULL;
static SPIPlanPtr restore_plan = NULL;
static SPIPlanPtr accumulating_plan = NULL;
static SPIPlanPtr lift_threshold_plan = NULL;

/* Prepares (once per backend) and returns a plan taking the project id as $1. */
static SPIPlanPtr
ProjectPlan(SPIPlanPtr *cache, const char *query)
{
	if (*cache == NULL)
	{
		Oid			argtypes[1] = {INT8OID};
		SPIPlanPtr	plan = SPI_prepare(query, 1, argtypes);

		if (plan == NULL)
			elog(ERROR, "credits: SPI_prepare failed for \"%s\": %s",
				 query, SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*cache = plan;
	}
	return *cache;
}

/*
 * Runs a kept plan for one project and returns the first column of its one row, which must be
 * of a pass-by-value type (or ignored): SPI's memory is gone when this returns.
 */
static Datum
RunForProject(SPIPlanPtr *cache, const char *query, int64 project_id, bool *isnull)
{
	Datum		args[1] = {Int64GetDatum(project_id)};
	Datum		result;
	int			rc;

	SPI_connect();
	rc = SPI_execute_plan(ProjectPlan(cache, query), args, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "credits: \"%s\" failed: %s", query, SPI_result_code_string(rc));
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
	SPI_finish();
	return result;
}

/* Reads a not-null attribute of an accounts row by name. */
static Datum
AccountAttr(HeapTuple tuple, TupleDesc desc, const char *name)
{
	bool		isnull;
	Datum		value = heap_getattr(tuple, SPI_fnumber(desc, name), desc, &isnull);

	if (isnull)
		elog(ERROR, "credits: accounts.%s is null", name);
	return value;
}

/*
 * BEFORE UPDATE: returns the new row with depleted set or cleared as the balance demands.  A
 * depleted account is lifted when its new balance is above what the threshold query gives for
 * the project (with_lots: credits._lift_threshold, what of the balance nothing may spend on
 * instances or volumes; 0.1.0: credits._accumulating, the usage accrued).
 */
static HeapTuple
DecideDepleted(TriggerData *trigdata, bool with_lots)
{
	TupleDesc	desc = trigdata->tg_relation->rd_att;
	HeapTuple	old_row = trigdata->tg_trigtuple;
	HeapTuple	new_row = trigdata->tg_newtuple;
	int64		project_id = DatumGetInt64(AccountAttr(new_row, desc, "project_id"));
	int64		old_balance = DatumGetInt64(AccountAttr(old_row, desc, "balance"));
	int64		new_balance = DatumGetInt64(AccountAttr(new_row, desc, "balance"));
	bool		depleted = DatumGetBool(AccountAttr(new_row, desc, "depleted"));
	bool		decided = depleted;
	int			depleted_att = SPI_fnumber(desc, "depleted");
	Datum		value;
	bool		isnull = false;

	if (!depleted && new_balance == 0 && old_balance > 0)
		decided = true;			/* reached zero (an account never funded has not) */
	else if (depleted && new_balance > old_balance)
	{
		/* A deposit into a depleted account: lift enforcement once it can pay its usage. */
		bool		acc_null;
		int64		accumulating;

		accumulating = with_lots
			? DatumGetInt64(RunForProject(&lift_threshold_plan, "SELECT credits._lift_threshold($1)",
										  project_id, &acc_null))
			: DatumGetInt64(RunForProject(&accumulating_plan, "SELECT credits._accumulating($1)",
										  project_id, &acc_null));
		if (acc_null)
			accumulating = 0;
		decided = !(new_balance > accumulating);
	}
	if (decided == depleted)
		return new_row;
	value = BoolGetDatum(decided);
	return heap_modify_tuple_by_cols(new_row, desc, 1, &depleted_att, &value, &isnull);
}

/* AFTER UPDATE: carries out a change of the depleted flag. */
static void
ActOnDepleted(TriggerData *trigdata)
{
	TupleDesc	desc = trigdata->tg_relation->rd_att;
	int64		project_id = DatumGetInt64(AccountAttr(trigdata->tg_newtuple, desc, "project_id"));
	bool		was = DatumGetBool(AccountAttr(trigdata->tg_trigtuple, desc, "depleted"));
	bool		is = DatumGetBool(AccountAttr(trigdata->tg_newtuple, desc, "depleted"));
	bool		isnull;

	if (!was && is)
		RunForProject(&cut_off_plan, "SELECT credits._cut_off($1, credits.now())",
					  project_id, &isnull);
	else if (was && !is)
		RunForProject(&restore_plan, "SELECT credits._restore_volumes($1, credits.now())",
					  project_id, &isnull);
}

/* The trigger: see the comment at the top of this file. */
static Datum
ZeroBalanceTrigger(FunctionCallInfo fcinfo, bool with_lots)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	result = NULL;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("credits_zero_balance must be fired as a row trigger for UPDATE")));

	if (TRIGGER_FIRED_BEFORE(trigdata->tg_event))
		result = DecideDepleted(trigdata, with_lots);
	else
		ActOnDepleted(trigdata);

	return PointerGetDatum(result);
}

PG_FUNCTION_INFO_V1(credits_zero_balance_lots);

/* Trigger function for credits.accounts (0.2.0: a balance of credit lots). */
Datum
credits_zero_balance_lots(PG_FUNCTION_ARGS)
{
	return ZeroBalanceTrigger(fcinfo, true);
}

PG_FUNCTION_INFO_V1(credits_zero_balance);

/* The same under the symbol credits 0.1.0 names, for a database not yet updated (no lots). */
Datum
credits_zero_balance(PG_FUNCTION_ARGS)
{
	return ZeroBalanceTrigger(fcinfo, false);
}
