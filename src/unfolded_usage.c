/*
 * unfolded_usage.c — a project's API usage not yet folded, read without scanning anyone else's.
 *
 * credits.usage_events holds the calls recorded since the last fold, and one busy project may
 * hold nearly all of them.  A plan for "project_id = $1" made without the value (a SQL
 * function's, a generic one), or with statistics taken while another project was the busy
 * one, scans every row for every project.  credits._unfolded_usage(project_id) reads one
 * project's events only through the index usage_events_project, whatever the statistics say,
 * so a project's read costs what that project holds.
 *
 * An event whose hour was already deducted (its call committed after the deduction) belongs
 * to the hour current when it is read or folded: credits._api_usage_hour, written here once
 * and called by the fold too, says which hour an event counts in.
 *
 * A query over many projects (the overview of every project, the balance checks) calls it once
 * per project.  After a few calls in the same query it reads the whole table once instead,
 * grouped by project, and answers the remaining calls from memory: the same rows (the same
 * snapshot), at the cost of one pass.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_collation.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "credits_limits.h"
#include "usage_math.h"

/* Calls of one query answered through the index before it reads the whole table instead. */
#define PROBES_BEFORE_ONE_PASS 64

/* One (product, hour) of a project's events, with their total in micro-credits. */
typedef struct UnfoldedGroup
{
	struct UnfoldedGroup *next;
	TimestampTz usage_hour;
	int128		amount;
	char		resource_id[FLEXIBLE_ARRAY_MEMBER];
} UnfoldedGroup;

/* A project's groups, in the table read in one pass. */
typedef struct ProjectGroups
{
	int64		project_id;
	UnfoldedGroup *groups;
} ProjectGroups;

/* What the function keeps across the calls of one query. */
typedef struct UnfoldedState
{
	int			calls;
	HTAB	   *by_project;		/* every project's groups, once read in one pass */
} UnfoldedState;

/*
 * The hour that API usage recorded for (project_id, resource_id, usage_hour) counts in, read
 * at time at: its own hour, unless that hour of that product is already deducted (a completed
 * usage transaction), then the hour of at.  One probe of the unique usage index.
 */
static TimestampTz
ApiUsageHour(int64 project_id, text *resource_id, TimestampTz usage_hour, TimestampTz at)
{
	static Oid	status_type = InvalidOid;
	static Oid	completed = InvalidOid;
	Relation	transactions = table_open(CreditsRelid("transactions"), AccessShareLock);
	Relation	index = index_open(CreditsRelid("transactions_one_usage_per_hour"), AccessShareLock);
	AttrNumber	status_attnum = get_attnum(RelationGetRelid(transactions), "status");
	TupleTableSlot *slot = table_slot_create(transactions, NULL);
	IndexScanDesc scan;
	ScanKeyData keys[3];
	bool		deducted = false;

	/* (the label's OID, looked up again when the type is another: the extension was recreated) */
	if (TupleDescAttr(RelationGetDescr(transactions), status_attnum - 1)->atttypid != status_type)
	{
		status_type = TupleDescAttr(RelationGetDescr(transactions), status_attnum - 1)->atttypid;
		completed = DatumGetObjectId(DirectFunctionCall2(enum_in, CStringGetDatum("completed"),
														 ObjectIdGetDatum(status_type)));
	}
	/* (the index is (usage_hour, project_id, resource_id), on usage rows only) */
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_TIMESTAMPTZ_EQ, TimestampTzGetDatum(usage_hour));
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(project_id));
	ScanKeyInit(&keys[2], 3, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(resource_id));
	keys[2].sk_collation = DEFAULT_COLLATION_OID;
	scan = index_beginscan(transactions, index, GetActiveSnapshot(), 3, 0);
	index_rescan(scan, keys, 3, NULL, 0);
	while (!deducted && index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;

		deducted = DatumGetObjectId(slot_getattr(slot, status_attnum, &isnull)) == completed;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(transactions, AccessShareLock);
	return deducted ? HourOf(at) : usage_hour;
}

PG_FUNCTION_INFO_V1(credits_api_usage_hour);

/*
 * credits._api_usage_hour(project_id bigint, resource_id text, usage_hour timestamptz, at
 * timestamptz) → timestamptz: the hour that API usage recorded in usage_hour counts in at
 * time at (ApiUsageHour).
 */
Datum
credits_api_usage_hour(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(ApiUsageHour(PG_GETARG_INT64(0), PG_GETARG_TEXT_PP(1),
									   PG_GETARG_TIMESTAMPTZ(2), PG_GETARG_TIMESTAMPTZ(3)));
}

/* Adds one event to the groups of its project (a new group for a new product or hour). */
static UnfoldedGroup *
AddEvent(UnfoldedGroup *groups, TupleTableSlot *slot, MemoryContext cxt)
{
	bool		isnull;
	text	   *resource_id = DatumGetTextPP(slot_getattr(slot, 2, &isnull));
	int			len = VARSIZE_ANY_EXHDR(resource_id);
	TimestampTz usage_hour = DatumGetTimestampTz(slot_getattr(slot, 3, &isnull));
	int64		amount = DatumGetInt64(slot_getattr(slot, 4, &isnull));
	UnfoldedGroup *g;

	for (g = groups; g != NULL; g = g->next)
		if (g->usage_hour == usage_hour && strlen(g->resource_id) == (size_t) len &&
			memcmp(g->resource_id, VARDATA_ANY(resource_id), len) == 0)
		{
			g->amount += amount;
			return groups;
		}
	g = MemoryContextAlloc(cxt, offsetof(UnfoldedGroup, resource_id) + len + 1);
	g->usage_hour = usage_hour;
	g->amount = amount;
	memcpy(g->resource_id, VARDATA_ANY(resource_id), len);
	g->resource_id[len] = '\0';
	g->next = groups;
	return g;
}

/* One project's groups, read through the index on project_id. */
static UnfoldedGroup *
ReadProjectByIndex(int64 project_id, MemoryContext cxt)
{
	Relation	events = table_open(CreditsRelid("usage_events"), AccessShareLock);
	Relation	index = index_open(CreditsRelid("usage_events_project"), AccessShareLock);
	TupleTableSlot *slot = table_slot_create(events, NULL);
	IndexScanDesc scan;
	ScanKeyData key;
	UnfoldedGroup *groups = NULL;

	/* (index column 1 is project_id) */
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(project_id));
	scan = index_beginscan(events, index, GetActiveSnapshot(), 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
		groups = AddEvent(groups, slot, cxt);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(events, AccessShareLock);
	return groups;
}

/* Every project's groups, read in one pass over the table. */
static HTAB *
ReadAllProjects(MemoryContext cxt)
{
	Relation	events = table_open(CreditsRelid("usage_events"), AccessShareLock);
	TupleTableSlot *slot = table_slot_create(events, NULL);
	TableScanDesc scan = table_beginscan(events, GetActiveSnapshot(), 0, NULL);
	HASHCTL		ctl;
	HTAB	   *by_project;

	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(ProjectGroups);
	ctl.hcxt = cxt;
	by_project = hash_create("credits unfolded usage", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		isnull,
					found;
		int64		project_id = DatumGetInt64(slot_getattr(slot, 1, &isnull));
		ProjectGroups *p = hash_search(by_project, &project_id, HASH_ENTER, &found);

		if (!found)
			p->groups = NULL;
		p->groups = AddEvent(p->groups, slot, cxt);
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	table_close(events, AccessShareLock);
	return by_project;
}

PG_FUNCTION_INFO_V1(credits_unfolded_usage);

/*
 * credits._unfolded_usage(project_id bigint) → table (resource_id text, usage_hour
 * timestamptz, units numeric): the project's recorded API usage not yet folded, per product
 * and the hour it counts in now (ApiUsageHour), in rate-microseconds.  (A late group and the
 * current hour's group of one product are two rows of the same hour.)
 */
Datum
credits_unfolded_usage(PG_FUNCTION_ARGS)
{
	int64		project_id = PG_GETARG_INT64(0);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	UnfoldedState *state = fcinfo->flinfo->fn_extra;
	MemoryContext call_cxt = CurrentMemoryContext;
	UnfoldedGroup *groups;

	if (state == NULL)
		state = fcinfo->flinfo->fn_extra =
			MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(UnfoldedState));
	if (state->by_project == NULL && ++state->calls > PROBES_BEFORE_ONE_PASS)
		state->by_project = ReadAllProjects(fcinfo->flinfo->fn_mcxt);
	if (state->by_project != NULL)
	{
		ProjectGroups *p = hash_search(state->by_project, &project_id, HASH_FIND, NULL);

		groups = p ? p->groups : NULL;
	}
	else
		groups = ReadProjectByIndex(project_id, call_cxt);

	InitMaterializedSRF(fcinfo, 0);
	for (; groups != NULL; groups = groups->next)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum(groups->resource_id);
		values[1] = TimestampTzGetDatum(ApiUsageHour(project_id, DatumGetTextPP(values[0]),
													 groups->usage_hour, CreditsNow()));
		values[2] = UsageUnitsGetNumeric(groups->amount * USECS_PER_HOUR);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
