/*
 * usage_record.c — credits.record_usage, the per-request path of API usage.
 *
 * A call that needs nothing but an append (no idempotency key, arguments in range, a known
 * project) is served here: one probe of the accounts' primary key, one row appended to
 * credits.usage_events with its index entry, no executor, no SPI, no plpgsql and no change of
 * user or search_path.  That is the work of a bare INSERT plus the probe; the plpgsql version
 * spent three quarters of its time around it (profile at 32 clients: security-definer and
 * search_path switching, two plans' executor start-up, the CHECK rebuilt per statement).
 *
 * Every other call (an idempotency key, or an argument the fast path's checks do not pass)
 * goes to credits._record_usage (sql/install/43_record_usage.sql), the complete plpgsql
 * version, which records keyed usage and raises the usual errors.  So the checks here only
 * choose the path: what they let through is exactly what credits._record_usage would record
 * as one plain usage_events row.
 *
 * The caller needs no right on the tables: the EXECUTE grant on credits.record_usage is the
 * gate, as SECURITY DEFINER is for the other functions.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/executor.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "bulk_insert.h"
#include "credits.h"
#include "credits_limits.h"
#include "usage_math.h"


/* The columns of credits.usage_events, in table order. */
enum
{
	EVENT_PROJECT_ID,
	EVENT_RESOURCE_ID,
	EVENT_USAGE_HOUR,
	EVENT_AMOUNT,
	EVENT_NATTS
};

/* Whether credits.accounts has a row for project_id, as the caller's snapshot sees it. */
static bool
AccountExists(Oid accounts_relid, int64 project_id)
{
	Relation	accounts = table_open(accounts_relid, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	bool		found;

	/* (heap attribute 1 is project_id, the primary key; systable_beginscan maps it to the index) */
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(project_id));
	scan = systable_beginscan(accounts, RelationGetPrimaryKeyIndex(accounts), true,
							  GetActiveSnapshot(), 1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(accounts, AccessShareLock);
	return found;
}

/*
 * Appends one row to credits.usage_events and its index entries, as an INSERT would (its
 * CHECK and NOT NULL constraints are checked: bulk_insert.h), and makes it visible to what the
 * caller does next.  Returns false, writing nothing, if the table has an INSERT trigger (none
 * is installed; one added by hand fires on the plpgsql path instead).
 */
static bool
AppendUsageEvent(Oid events_relid, int64 project_id, text *resource_id, TimestampTz usage_hour,
				 Credits amount)
{
	BulkInsert *insert = BulkInsertOpen(events_relid, true, NULL);
	TupleTableSlot *slot;

	if (insert == NULL)
		return false;
	slot = BulkInsertNextSlot(insert);
	if (slot->tts_tupleDescriptor->natts != EVENT_NATTS)
		elog(ERROR, "credits: credits.usage_events does not have the columns record_usage writes");
	slot->tts_values[EVENT_PROJECT_ID] = Int64GetDatum(project_id);
	slot->tts_values[EVENT_RESOURCE_ID] = PointerGetDatum(resource_id);
	slot->tts_values[EVENT_USAGE_HOUR] = TimestampTzGetDatum(usage_hour);
	slot->tts_values[EVENT_AMOUNT] = CreditsGetDatum(amount);
	memset(slot->tts_isnull, false, EVENT_NATTS * sizeof(bool));
	BulkInsertAdd(insert);
	BulkInsertClose(insert);
	CommandCounterIncrement();
	return true;
}

/* Calls credits._record_usage with the same four arguments (nulls included). */
static void
RecordUsageInPlpgsql(FunctionCallInfo outer)
{
	Oid		   *argtypes;
	int			nargs;
	Oid			fn;
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, 4);

	/* (its argument types are record_usage's own) */
	get_func_signature(outer->flinfo->fn_oid, &argtypes, &nargs);
	fn = LookupFuncName(list_make2(makeString("credits"), makeString("_record_usage")), nargs, argtypes, false);
	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 4, InvalidOid, NULL, NULL);
	for (int i = 0; i < 4; i++)
		fcinfo->args[i] = outer->args[i];
	FunctionCallInvoke(fcinfo);
}

/*
 * Appends the call in fcinfo if it is a plain one: no idempotency key, arguments in range, a
 * known project (and no trigger on usage_events).  Returns false, having written nothing,
 * for any other call: the plpgsql version judges it.
 */
static bool
AppendPlainCall(FunctionCallInfo fcinfo)
{
	text	   *resource_id;
	int			resource_bytes;
	Credits		amount;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || !PG_ARGISNULL(3))
		return false;
	resource_id = PG_GETARG_TEXT_PP(1);
	resource_bytes = VARSIZE_ANY_EXHDR(resource_id);
	amount = PG_GETARG_CREDITS(2);
	if (resource_bytes == 0 || amount <= 0 || amount > CREDITS_AMOUNT_MAX)
		return false;
	if (resource_bytes > CREDITS_ID_MAX_CHARS &&
		pg_mbstrlen_with_len(VARDATA_ANY(resource_id), resource_bytes) > CREDITS_ID_MAX_CHARS)
		return false;

	return AccountExists(CreditsRelid("accounts"), PG_GETARG_INT64(0)) &&
		AppendUsageEvent(CreditsRelid("usage_events"), PG_GETARG_INT64(0), resource_id,
						 HourOf(CreditsNow()), amount);
}

PG_FUNCTION_INFO_V1(credits_record_usage);

/*
 * credits.record_usage(project_id bigint, resource_id text, amount credits,
 * idempotency_key text default null) → void: amount of API usage of resource_id in the
 * current hour, appended here or recorded by credits._record_usage (see the top of the file).
 */
Datum
credits_record_usage(PG_FUNCTION_ARGS)
{
	/* (it writes on either path: refused wherever an INSERT would be, before anything else) */
	PreventCommandIfReadOnly("credits.record_usage()");
	PreventCommandIfParallelMode("credits.record_usage()");
	PreventCommandDuringRecovery("credits.record_usage()");
	if (!AppendPlainCall(fcinfo))
		RecordUsageInPlpgsql(fcinfo);
	PG_RETURN_VOID();
}
