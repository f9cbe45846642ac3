/*
 * deduction.c — the hourly deduction: every ended usage hour written once, and deducted.
 *
 * credits._deduct_ended_hours(cur, at) is the heart of run_hourly_deductions (sql/install/
 * 50_periodic.sql, which folds the API usage first and starts auto-recharges after).  For
 * every project with a billing resource or a booked usage hour before the hour boundary cur:
 *
 *   1. lock its account (in project order, before anything is read: a stop or start of one
 *      of its resources takes the account first, so it waits for this run, and this run
 *      sees every one that committed before);
 *   2. build its ended hours: the hours already booked as accumulating (stops, restarts,
 *      rate changes, cut-offs), plus each billing resource's time from its booking clock,
 *      greatest(accrued_until, the account's deducted_until), to cur, split at the hours and
 *      kept exactly in rate-microseconds (usage_math.c), plus its API usage rolled up per
 *      product and hour (credits.usage_rollup, emptied of those rows by the run);
 *   3. take them from the project's credit lots oldest first (by hour, then transaction id;
 *      the hours new in this run get their ids in hour and resource order, hour_order.c):
 *      each hour's charge is its units rounded half to even once; it is paid by the lots that
 *      may pay for it (its kind, not expired when it began) in draw-down order (lots.c), and
 *      what they cannot cover is uncollected.  Each hour's amount is minus what it took and its
 *      uncollected the rest of its charge, so that a project's completed amounts add up to its
 *      balance.  (Under 0.1.0's symbol the balance is one lot that pays for everything, and
 *      amounts are whole charges, as 0.1.0 wrote them.);
 *   4. write them: new hours inserted completed (a page at a time, bulk_insert.c; no
 *      trigger fires on them: their accounts are the ones locked in step 1), booked
 *      hours completed in place (one UPDATE for all), the lots drawn on updated (one UPDATE:
 *      remaining down, used up); then one UPDATE debits the accounts
 *      and widens their deducted hours, [deducted_from, deducted_until), to take in this
 *      run's (up to cur).  The zero-balance trigger fires on it and cuts off the projects
 *      whose balance reached zero, in this transaction.
 *
 * The caller holds the periodic-run lock, so runs never overlap; everything happens in the
 * caller's transaction, so a crash leaves every hour as it was.  Rows stream through one
 * project at a time.
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "common/hashfn.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "bulk_insert.h"
#include "credits.h"
#include "hour_order.h"
#include "lots.h"
#include "usage_math.h"

PG_FUNCTION_INFO_V1(credits_deduct_ended_hours);
PG_FUNCTION_INFO_V1(credits_deduct_hours);

/* One usage hour to deduct. */
typedef struct UsageHour
{
	TimestampTz hour;
	const char *resource_id;	/* shared by the hours of one resource */
	const char *description;	/* (new hours only) */
	int64		transaction_id; /* 0 until a new hour gets its id */
	bool		is_new;			/* no stored row yet */
	int128		booked_units;	/* units stored in its row (booked hours) */
	int128		units;			/* all its units */
	int			kind;			/* LOT_KIND_* of its resource (API when none) */
	Credits		charge;			/* its units, rounded */
	Credits		collected;		/* what it took from the balance */
} UsageHour;

/* Where an hour is in a project's list, by (hour, resource). */
typedef struct HourKey
{
	TimestampTz hour;
	const char *resource_id;
} HourKey;

typedef struct HourEntry
{
	HourKey		key;
	int			index;
} HourEntry;

/*
 * One project's hours: the booked ones first (in hour and id order, as read), then the new
 * ones.  The booked and rolled-up hours are also indexed by (hour, resource) as they are
 * taken, before the resources' hours, so that each resource-hour finds the hour it joins in
 * one probe: the work is linear in the project's resource-hours.  A resource's own hours
 * never meet each other, so they are not indexed.
 */
typedef struct ProjectHours
{
	UsageHour  *items;
	int			n;
	int			size;
	int			nbooked;
	HTAB	   *index;			/* created on first use */
} ProjectHours;

/*
 * Rows read through a cursor in project order (the project id in column 1), a batch at a time,
 * so that the memory of one batch is used again for the next.  No cursor: no rows.
 */
typedef struct RowStream
{
	Portal		portal;
	SPITupleTable *batch;
	uint64		next;
} RowStream;

/* What the run needs at hand while it streams the projects. */
typedef struct DeductionRun
{
	/* the call */
	TimestampTz cur;			/* the hour boundary: hours before it are deducted */
	TimestampTz at;				/* completed_at of the hours */
	bool		whole_charges;	/* amounts as 0.1.0 wrote them: minus the whole charge */
	bool		with_lots;		/* draw on credits.credit_lots (0.1.0: on the balance) */
	MemoryContext call_cxt;		/* lives for the whole call */
	MemoryContext project_cxt;	/* one project's hours; reset after each */

	/* what it writes with */
	Oid			sequence;		/* credits.transactions_transaction_id_seq */
	Oid			credits_type;
	Datum		usage_type;		/* 'usage'::credits.transaction_type */
	Datum		completed_status;	/* 'completed'::credits.transaction_status */

	/* what it reads, each in project order through a cursor: booked hours, rolled-up API
	 * usage, the due projects' active lots and the billing resources */
	RowStream	booked;
	RowStream	rolled_up;
	uint64		rolled_up_taken;
	RowStream	lots;
	RowStream	resources;

	/* what it writes: new hours (as it goes), booked hours to complete and the accounts to
	 * debit (column by column, each for one UPDATE at the end) */
	BulkInsert *bulk;
	ArrayBuildState *booked_project_ids, *booked_hours, *booked_resource_ids,
			   *booked_units_before, *booked_units, *booked_amounts, *booked_uncollected;
	int64		booked_completions;
	ArrayBuildState *debited_ids, *paid, *oldest_hours;
	ArrayBuildState *drawn_lot_ids, *drawn;	/* what each lot gave */
	int64		drawn_lots;
	int64		completed;
} DeductionRun;

/* Columns of credits.transactions the run writes (attribute numbers, from 1). */
typedef struct UsageColumns
{
	int			natts;
	AttrNumber	transaction_id, project_id, type, status, amount, uncollected, created_at,
				description, resource_id, usage_hour, accrued_units, completed_at;
} UsageColumns;

static UsageColumns cols;

#define STREAM_BATCH 1000

/* Appends an empty hour to the project's list; returns its index. */
static int
PushHour(ProjectHours *ph)
{
	if (ph->n == ph->size)
	{
		ph->size = ph->size ? ph->size * 2 : 16;
		ph->items = ph->items ? repalloc_huge(ph->items, ph->size * sizeof(UsageHour))
			: palloc(ph->size * sizeof(UsageHour));
	}
	memset(&ph->items[ph->n], 0, sizeof(UsageHour));
	return ph->n++;
}

/* Hashes an hour's key. */
static uint32
HourKeyHash(const void *key, Size keysize)
{
	const HourKey *k = key;

	return hash_combine(hash_bytes((const unsigned char *) k->resource_id, strlen(k->resource_id)),
						hash_bytes_uint32((uint32) (k->hour / USECS_PER_HOUR)));
}

/* Compares two hours' keys: 0 when they are the same hour of the same resource. */
static int
HourKeyMatch(const void *a, const void *b, Size keysize)
{
	const HourKey *x = a;
	const HourKey *y = b;

	return x->hour != y->hour || strcmp(x->resource_id, y->resource_id) != 0;
}

/* Indexes the hour at index by its hour and resource. */
static void
IndexHour(ProjectHours *ph, int index)
{
	HourKey		key = {ph->items[index].hour, ph->items[index].resource_id};
	bool		found;

	if (ph->index == NULL)
	{
		HASHCTL		ctl = {0};

		ctl.keysize = sizeof(HourKey);
		ctl.entrysize = sizeof(HourEntry);
		ctl.hash = HourKeyHash;
		ctl.match = HourKeyMatch;
		ctl.hcxt = CurrentMemoryContext;
		ph->index = hash_create("credits deduction hours", 64, &ctl,
								HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	}
	((HourEntry *) hash_search(ph->index, &key, HASH_ENTER, &found))->index = index;
}

/* The indexed hour of resource_id at hour, or NULL. */
static UsageHour *
FindHour(ProjectHours *ph, TimestampTz hour, const char *resource_id)
{
	HourKey		key = {hour, resource_id};
	HourEntry  *e;

	if (ph->index == NULL)
		return NULL;
	e = hash_search(ph->index, &key, HASH_FIND, NULL);
	return e ? &ph->items[e->index] : NULL;
}

/*
 * Adds units of resource_id at hour to the indexed hour they belong to, or to a new hour
 * (indexed when index_new).  Returns the index of a new hour, or -1.  (An API product may
 * share its id with a resource: then they are one hour.)
 */
static int
AddUnits(ProjectHours *ph, TimestampTz hour, const char *resource_id, const char *description,
		 int kind, int128 units, bool index_new)
{
	UsageHour  *h = FindHour(ph, hour, resource_id);
	int			i;

	if (h != NULL)
	{
		h->units += units;
		return -1;
	}
	i = PushHour(ph);
	h = &ph->items[i];
	h->hour = hour;
	h->resource_id = resource_id;
	h->description = description;
	h->kind = kind;
	h->is_new = true;
	h->units = units;
	if (index_new)
		IndexHour(ph, i);
	return i;
}

/* Runs a query that must succeed, with parameters (nulls as SPI takes them, or NULL). */
static void
RunQuery(const char *query, int nargs, Oid *types, Datum *values, const char *nulls, int expected)
{
	int			rc = SPI_execute_with_args(query, nargs, types, values, nulls, false, 0);

	if (rc != expected)
		elog(ERROR, "credits: \"%s\" failed: %s", query, SPI_result_code_string(rc));
}

/*
 * Raises (and so undoes the run) unless the last UPDATE changed all expected rows: their
 * writers lock the accounts this run holds, so none can change; if one did, the next run starts
 * over.
 */
static void
RequireAllUpdated(int64 expected, const char *what)
{
	if (SPI_processed != (uint64) expected)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("credits: " INT64_FORMAT " of " INT64_FORMAT " %s changed during the deduction run",
						expected - (int64) SPI_processed, expected, what)));
}

/* Looks up the attribute number of a column of credits.transactions. */
static AttrNumber
Column(TupleDesc desc, const char *name)
{
	int			attnum = SPI_fnumber(desc, name);

	if (attnum <= 0)
		elog(ERROR, "credits: credits.transactions has no column \"%s\"", name);
	return (AttrNumber) attnum;
}

/* Finds the table, sequence, enum values and columns the run writes. */
static Oid
SetUpTargets(DeductionRun *run)
{
	Oid			relid = get_relname_relid("transactions", get_namespace_oid("credits", false));
	Relation	rel;
	TupleDesc	desc;

	RunQuery("SELECT 'usage'::credits.transaction_type, 'completed'::credits.transaction_status,"
			 " 'credits.transactions_transaction_id_seq'::regclass",
			 0, NULL, NULL, NULL, SPI_OK_SELECT);
	run->usage_type = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &(bool){0});
	run->completed_status = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &(bool){0});
	run->sequence = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &(bool){0}));

	rel = table_open(relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	cols.natts = desc->natts;
	cols.transaction_id = Column(desc, "transaction_id");
	cols.project_id = Column(desc, "project_id");
	cols.type = Column(desc, "type");
	cols.status = Column(desc, "status");
	cols.amount = Column(desc, "amount");
	cols.uncollected = Column(desc, "uncollected");
	cols.created_at = Column(desc, "created_at");
	cols.description = Column(desc, "description");
	cols.resource_id = Column(desc, "resource_id");
	cols.usage_hour = Column(desc, "usage_hour");
	cols.accrued_units = Column(desc, "accrued_units");
	cols.completed_at = Column(desc, "completed_at");
	table_close(rel, NoLock);
	return relid;
}

/* Opens a stream of the rows of query (in project order) with parameters as SPI takes them. */
static void
StreamOpen(RowStream *stream, const char *query, int nargs, Oid *types, Datum *values, const char *nulls)
{
	stream->portal = SPI_cursor_open_with_args(NULL, query, nargs, types, values, nulls, false, 0);
	stream->batch = NULL;
	stream->next = 0;
}

/* Closes a stream (if open). */
static void
StreamClose(RowStream *stream)
{
	if (stream->portal)
		SPI_cursor_close(stream->portal);
	stream->portal = NULL;
}

/*
 * The next row of project_id in the stream, or NULL after its last.  Rows of a project before
 * it are passed over: its account was not due when locked, so they wait for the next run.
 * The row stays valid until the next call; the caller's memory context is kept.
 */
static HeapTuple
StreamRowOfProject(RowStream *stream, int64 project_id)
{
	bool		isnull;

	while (stream->portal)
	{
		HeapTuple	tuple;
		int64		project;

		if (stream->batch == NULL || stream->next == stream->batch->numvals)
		{
			MemoryContext cxt = CurrentMemoryContext;

			if (stream->batch)
				SPI_freetuptable(stream->batch);
			SPI_cursor_fetch(stream->portal, true, STREAM_BATCH);
			MemoryContextSwitchTo(cxt); /* (SPI returns in its own context) */
			stream->batch = SPI_tuptable;
			stream->next = 0;
			if (stream->batch->numvals == 0)
			{
				StreamClose(stream);
				return NULL;
			}
		}
		tuple = stream->batch->vals[stream->next];
		project = DatumGetInt64(SPI_getbinval(tuple, stream->batch->tupdesc, 1, &isnull));
		if (project > project_id)
			return NULL;
		stream->next++;
		if (project == project_id)
			return tuple;
	}
	return NULL;
}

/* The kind bit (LotKindOf) of the resource kind in column col of tuple (null: API usage). */
static int
KindColumn(HeapTuple tuple, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		kind = SPI_getbinval(tuple, desc, col, &isnull);

	return LotKindOf(isnull ? NULL : TextDatumGetCString(kind));
}

/* The booked hours of project (they come in project, hour, id order), indexed. */
static void
TakeBookedHours(DeductionRun *run, int64 project_id, ProjectHours *ph)
{
	HeapTuple	tuple;
	bool		isnull;

	while ((tuple = StreamRowOfProject(&run->booked, project_id)) != NULL)
	{
		TupleDesc	desc = run->booked.batch->tupdesc;
		int			i = PushHour(ph);
		UsageHour  *h = &ph->items[i];

		h->hour = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 2, &isnull));
		h->resource_id = TextDatumGetCString(SPI_getbinval(tuple, desc, 3, &isnull));
		h->transaction_id = DatumGetInt64(SPI_getbinval(tuple, desc, 4, &isnull));
		h->booked_units = UsageUnitsFromNumeric(DatumGetNumeric(SPI_getbinval(tuple, desc, 5, &isnull)));
		h->units = h->booked_units;
		h->kind = KindColumn(tuple, desc, 6);
		IndexHour(ph, i);
	}
	ph->nbooked = ph->n;
}

/* The rolled-up API usage of project (the rows come in project order), indexed. */
static void
TakeRolledUpHours(DeductionRun *run, int64 project_id, ProjectHours *ph)
{
	HeapTuple	tuple;
	bool		isnull;

	while ((tuple = StreamRowOfProject(&run->rolled_up, project_id)) != NULL)
	{
		TupleDesc	desc = run->rolled_up.batch->tupdesc;

		run->rolled_up_taken++;
		AddUnits(ph,
				 DatumGetTimestampTz(SPI_getbinval(tuple, desc, 2, &isnull)),
				 TextDatumGetCString(SPI_getbinval(tuple, desc, 3, &isnull)),
				 TextDatumGetCString(SPI_getbinval(tuple, desc, 4, &isnull)),
				 KindColumn(tuple, desc, 6),
				 UsageUnitsFromNumeric(DatumGetNumeric(SPI_getbinval(tuple, desc, 5, &isnull))),
				 true);
	}
}

/* The billing resources of project, hour by hour, onto its hours. */
static void
TakeResourceHours(DeductionRun *run, int64 project_id, TimestampTz deducted_until, ProjectHours *ph)
{
	HeapTuple	tuple;
	bool		isnull;

	while ((tuple = StreamRowOfProject(&run->resources, project_id)) != NULL)
	{
		TupleDesc	desc = run->resources.batch->tupdesc;
		char	   *resource_id;
		char	   *description;
		int64		rate;
		TimestampTz from;
		int			kind;
		HourSegments split;
		TimestampTz hour;
		int64		usecs;

		rate = DatumGetInt64(SPI_getbinval(tuple, desc, 2, &isnull));
		from = Max(DatumGetTimestampTz(SPI_getbinval(tuple, desc, 3, &isnull)), deducted_until);
		resource_id = TextDatumGetCString(SPI_getbinval(tuple, desc, 4, &isnull));
		description = TextDatumGetCString(SPI_getbinval(tuple, desc, 5, &isnull));
		kind = KindColumn(tuple, desc, 6);
		/* hour by hour from the hour of from up to cur */
		HourSegmentsBegin(&split, from, run->cur);
		while (HourSegmentsNext(&split, &hour, &usecs))
			AddUnits(ph, hour, resource_id, description, kind, (int128) rate * (int128) usecs, false);
	}
}

/*
 * Empties the roll-up of the hours before cur of the projects deducted: exactly the rows they
 * took (no fold runs meanwhile, under the periodic-run lock).  The rows of projects passed
 * over stay for a later run.
 */
static void
DeleteRolledUpHours(DeductionRun *run)
{
	Oid			types[2] = {TIMESTAMPTZOID, INT8ARRAYOID};
	Datum		args[2];

	if (run->rolled_up_taken == 0)
		return;
	args[0] = TimestampTzGetDatum(run->cur);
	args[1] = makeArrayResult(run->debited_ids, run->call_cxt);
	RunQuery("DELETE FROM credits.usage_rollup u USING unnest($2::bigint[]) AS d(project_id)"
			 " WHERE u.project_id = d.project_id AND u.usage_hour < $1",
			 2, types, args, NULL, SPI_OK_DELETE);
	RequireAllUpdated(run->rolled_up_taken, "rolled-up API usage rows");
}

/* A deducted hour's amount, negated: what it took from the balance (0.1.0: its whole charge). */
static Credits
UsageHourAmount(DeductionRun *run, UsageHour *h)
{
	return run->whole_charges ? h->charge : h->collected;
}

/* Inserts a new hour, completed. */
static void
InsertHour(DeductionRun *run, int64 project_id, UsageHour *h)
{
	TupleTableSlot *slot = BulkInsertNextSlot(run->bulk);
	MemoryContext old = MemoryContextSwitchTo(BulkInsertRowContext(run->bulk));
	Datum	   *v = slot->tts_values;
	bool	   *n = slot->tts_isnull;

	for (int i = 0; i < cols.natts; i++)
		n[i] = true;
#define SET(col, value) (v[cols.col - 1] = (value), n[cols.col - 1] = false)
	SET(transaction_id, Int64GetDatum(h->transaction_id));
	SET(project_id, Int64GetDatum(project_id));
	SET(type, run->usage_type);
	SET(status, run->completed_status);
	SET(amount, CreditsGetDatum(-UsageHourAmount(run, h)));
	SET(uncollected, CreditsGetDatum(h->charge - h->collected));
	SET(created_at, TimestampTzGetDatum(h->hour));
	SET(description, CStringGetTextDatum(h->description));
	SET(resource_id, CStringGetTextDatum(h->resource_id));
	SET(usage_hour, TimestampTzGetDatum(h->hour));
	SET(accrued_units, UsageUnitsGetNumeric(h->units));
	SET(completed_at, TimestampTzGetDatum(run->at));
#undef SET
	MemoryContextSwitchTo(old);
	BulkInsertAdd(run->bulk);
}

/* Appends one value to a column of the booked hours to complete. */
static void
Collect(DeductionRun *run, ArrayBuildState **column, Datum value, Oid type)
{
	if (*column == NULL)
		*column = initArrayResult(type, run->call_cxt, false);
	accumArrayResult(*column, value, false, type, run->call_cxt);
}

/* Queues a booked hour to be completed in place (CompleteBookedHours). */
static void
QueueBookedHour(DeductionRun *run, int64 project_id, UsageHour *h)
{
	Collect(run, &run->booked_project_ids, Int64GetDatum(project_id), INT8OID);
	Collect(run, &run->booked_hours, TimestampTzGetDatum(h->hour), TIMESTAMPTZOID);
	Collect(run, &run->booked_resource_ids, CStringGetTextDatum(h->resource_id), TEXTOID);
	Collect(run, &run->booked_units_before, UsageUnitsGetNumeric(h->booked_units), NUMERICOID);
	Collect(run, &run->booked_units, UsageUnitsGetNumeric(h->units), NUMERICOID);
	Collect(run, &run->booked_amounts, CreditsGetDatum(-UsageHourAmount(run, h)), run->credits_type);
	Collect(run, &run->booked_uncollected, CreditsGetDatum(h->charge - h->collected), run->credits_type);
	run->booked_completions++;
}

/*
 * Completes the queued booked hours in one UPDATE.  Each must still hold the units it was
 * read with: its writers lock the account this run holds, so it cannot change; if one did,
 * everything is undone and the next run starts over.
 */
static void
CompleteBookedHours(DeductionRun *run)
{
	Oid			types[8] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, NUMERICARRAYOID,
		NUMERICARRAYOID, get_array_type(run->credits_type), get_array_type(run->credits_type),
	TIMESTAMPTZOID};
	Datum		args[8];

	if (run->booked_completions == 0)
		return;
	args[0] = makeArrayResult(run->booked_project_ids, run->call_cxt);
	args[1] = makeArrayResult(run->booked_hours, run->call_cxt);
	args[2] = makeArrayResult(run->booked_resource_ids, run->call_cxt);
	args[3] = makeArrayResult(run->booked_units_before, run->call_cxt);
	args[4] = makeArrayResult(run->booked_units, run->call_cxt);
	args[5] = makeArrayResult(run->booked_amounts, run->call_cxt);
	args[6] = makeArrayResult(run->booked_uncollected, run->call_cxt);
	args[7] = TimestampTzGetDatum(run->at);
	RunQuery("UPDATE credits.transactions t"
			 "   SET status = 'completed', completed_at = $8, accrued_units = b.units,"
			 "       amount = b.amount, uncollected = b.uncollected"
			 "  FROM unnest($1, $2, $3, $4, $5, $6, $7)"
			 "       AS b(project_id, usage_hour, resource_id, booked_units, units, amount, uncollected)"
			 " WHERE t.project_id = b.project_id AND t.usage_hour = b.usage_hour"
			 "   AND t.resource_id = b.resource_id AND t.type = 'usage'"
			 "   AND t.status = 'accumulating' AND t.accrued_units = b.booked_units",
			 8, types, args, NULL, SPI_OK_UPDATE);
	RequireAllUpdated(run->booked_completions, "booked usage hours");
}

/*
 * Debits every due account by what it paid and moves its deducted hours to end at cur (and
 * begin at its oldest hour deducted, if older), in one UPDATE.  The zero-balance trigger fires
 * on it and cuts off the projects whose balance reached zero.
 */
static void
DebitAccounts(DeductionRun *run)
{
	Oid			types[4] = {INT8ARRAYOID, get_array_type(run->credits_type), TIMESTAMPTZARRAYOID,
							TIMESTAMPTZOID};
	Datum		args[4];

	if (run->debited_ids == NULL)
		return;
	args[0] = makeArrayResult(run->debited_ids, run->call_cxt);
	args[1] = makeArrayResult(run->paid, run->call_cxt);
	args[2] = makeArrayResult(run->oldest_hours, run->call_cxt);
	args[3] = TimestampTzGetDatum(run->cur);
	RunQuery("UPDATE credits.accounts a"
			 "   SET balance = a.balance OPERATOR(credits.-) d.paid,"
			 "       deducted_from = least(a.deducted_from, d.oldest_hour),"
			 "       deducted_until = greatest(a.deducted_until, $4)"
			 "  FROM unnest($1, $2, $3) AS d(project_id, paid, oldest_hour)"
			 " WHERE a.project_id = d.project_id",
			 4, types, args, NULL, SPI_OK_UPDATE);
}

/* The active lots, in project order, with the keys of the draw-down order, as ReadLots reads them. */
#define LOTS_SELECT \
	"SELECT l.project_id, l.transaction_id, l.remaining OPERATOR(credits.-) l.held, l.expires_at," \
	"       credits._kind_mask(l.applies_to), l.priority, l.kind = 'promotional', l.created_at" \
	"  FROM credits.credit_lots l"

/*
 * Opens the stream of the active lots of the due projects (ndue of them, ids first to last,
 * collected in due_ids), after their accounts are locked (a refund or grant takes the account
 * first), in project order (LotsOfProject puts each project's in draw-down order).  When the
 * due projects fill most of their id range, the lots of the whole range are read, which costs
 * less than joining the ids (the lots of projects not due are passed over); else only theirs.
 */
static void
ReadLots(DeductionRun *run, ArrayBuildState *due_ids, int64 first, int64 last, uint64 ndue)
{
	Oid			types[2] = {INT8OID, INT8OID};
	Datum		args[2];

	if (!run->with_lots || due_ids == NULL)
		return;
	if (ndue > 1 && (uint64) (last - first) < 2 * ndue)
	{
		args[0] = Int64GetDatum(first);
		args[1] = Int64GetDatum(last);
		StreamOpen(&run->lots, LOTS_SELECT " WHERE l.active AND l.project_id BETWEEN $1 AND $2"
				   " ORDER BY l.project_id", 2, types, args, NULL);
	}
	else
	{
		types[0] = INT8ARRAYOID;
		args[0] = makeArrayResult(due_ids, run->call_cxt);
		StreamOpen(&run->lots, LOTS_SELECT " JOIN unnest($1) AS d(project_id) ON d.project_id = l.project_id"
				   " WHERE l.active ORDER BY l.project_id", 1, types, args, NULL);
	}
}

/*
 * The lots project_id draws on, in draw-down order, into *lots (*n of them): its active lots,
 * or (0.1.0) its balance as one lot that pays for everything.
 */
static Lot *
LotsOfProject(DeductionRun *run, int64 project_id, Credits balance, int *n)
{
	HeapTuple	tuple;
	bool		isnull;
	int			size = 4;
	Lot		   *lots = palloc0(size * sizeof(Lot));

	*n = 0;
	if (!run->with_lots)
	{
		lots[0].left = balance;
		lots[0].expires_at = DT_NOEND;
		lots[0].kinds = LOT_KIND_ALL;
		*n = 1;
		return lots;
	}
	while ((tuple = StreamRowOfProject(&run->lots, project_id)) != NULL)
	{
		TupleDesc	desc = run->lots.batch->tupdesc;
		Lot		   *lot;
		Datum		expires;

		if (*n == size)
			lots = repalloc(lots, (size *= 2) * sizeof(Lot));
		lot = &lots[(*n)++];
		lot->transaction_id = DatumGetInt64(SPI_getbinval(tuple, desc, 2, &isnull));
		lot->left = DatumGetCredits(SPI_getbinval(tuple, desc, 3, &isnull));
		expires = SPI_getbinval(tuple, desc, 4, &isnull);
		lot->expires = !isnull;
		lot->expires_at = isnull ? DT_NOEND : DatumGetTimestampTz(expires);
		lot->kinds = DatumGetInt32(SPI_getbinval(tuple, desc, 5, &isnull));
		lot->priority = DatumGetInt32(SPI_getbinval(tuple, desc, 6, &isnull));
		lot->promotional = DatumGetBool(SPI_getbinval(tuple, desc, 7, &isnull));
		lot->created_at = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 8, &isnull));
		lot->drawn = 0;
	}
	LotsSortForDrawDown(lots, *n);
	return lots;
}

/* Takes what each lot gave from it, in one UPDATE; a lot left with nothing is used up. */
static void
UpdateLots(DeductionRun *run)
{
	Oid			types[2] = {INT8ARRAYOID, get_array_type(run->credits_type)};
	Datum		args[2];

	if (run->drawn_lots == 0)
		return;
	args[0] = makeArrayResult(run->drawn_lot_ids, run->call_cxt);
	args[1] = makeArrayResult(run->drawn, run->call_cxt);
	RunQuery("UPDATE credits.credit_lots l"
			 "   SET remaining = l.remaining OPERATOR(credits.-) d.drawn, used = l.used OPERATOR(credits.+) d.drawn,"
			 "       active = l.remaining OPERATOR(credits.>) d.drawn,"
			 "       ended = CASE WHEN l.remaining OPERATOR(credits.=) d.drawn THEN 'used' END"
			 "  FROM unnest($1, $2) AS d(transaction_id, drawn)"
			 " WHERE l.transaction_id = d.transaction_id AND l.active",
			 2, types, args, NULL, SPI_OK_UPDATE);
	RequireAllUpdated(run->drawn_lots, "credit lots");
}

/* Takes hour h's charge from the lots that may pay for it, and queues it to be written. */
static void
DeductHour(DeductionRun *run, int64 project_id, UsageHour *h, Lot *lots, int nlots, Credits *collected)
{
	h->charge = UsageAmount(h->units);
	h->collected = LotsDraw(lots, nlots, h->hour, h->kind, h->charge);
	*collected += h->collected;
	if (h->is_new)
		InsertHour(run, project_id, h);
	else
		QueueBookedHour(run, project_id, h);
}

/*
 * Deducts one project's ended hours from its lots (0.1.0: from balance); returns what it
 * collected, or -1 when it has none, and sets *oldest_hour to the oldest of them.  The hours
 * are written before the lots and accounts are updated (the caller's last steps).
 */
static Credits
DeductProject(DeductionRun *run, int64 project_id, Credits balance, TimestampTz deducted_until,
			  TimestampTz *oldest_hour)
{
	ProjectHours ph = {0};
	UsageHour  *booked;
	UsageHour  *fresh;
	int			nfresh;
	TimestampTz *hours;
	const char **ids;
	int		   *order;
	int			b = 0;
	int			f = 0;
	Credits		collected = 0;
	int			nlots;
	Lot		   *lots;

	TakeBookedHours(run, project_id, &ph);
	TakeRolledUpHours(run, project_id, &ph);
	TakeResourceHours(run, project_id, deducted_until, &ph);
	lots = LotsOfProject(run, project_id, balance, &nlots);
	if (ph.n == 0)
		return -1;
	booked = ph.items;
	fresh = ph.items + ph.nbooked;
	nfresh = ph.n - ph.nbooked;

	/*
	 * New hours get their ids in hour and resource order (byte order of the ids, hour_order.c),
	 * after every booked one's; then all are taken oldest first, by hour and id: the booked
	 * hours (read in that order) and the new ones merged.
	 */
	hours = palloc(Max(nfresh, 1) * sizeof(TimestampTz));
	ids = palloc(Max(nfresh, 1) * sizeof(const char *));
	for (int i = 0; i < nfresh; i++)
	{
		hours[i] = fresh[i].hour;
		ids[i] = fresh[i].resource_id;
	}
	order = HourIdOrder(nfresh, hours, ids);
	for (int i = 0; i < nfresh; i++)
		fresh[order[i]].transaction_id = nextval_internal(run->sequence, false);
	*oldest_hour = nfresh == 0 ? booked[0].hour :
		ph.nbooked == 0 ? fresh[order[0]].hour : Min(booked[0].hour, fresh[order[0]].hour);
	while (b < ph.nbooked || f < nfresh)
	{
		if (f == nfresh || (b < ph.nbooked && booked[b].hour <= fresh[order[f]].hour))
			DeductHour(run, project_id, &booked[b++], lots, nlots, &collected);
		else
			DeductHour(run, project_id, &fresh[order[f++]], lots, nlots, &collected);
	}
	for (int i = 0; run->with_lots && i < nlots; i++)
		if (lots[i].drawn > 0)
		{
			Collect(run, &run->drawn_lot_ids, Int64GetDatum(lots[i].transaction_id), INT8OID);
			Collect(run, &run->drawn, CreditsGetDatum(lots[i].drawn), run->credits_type);
			run->drawn_lots++;
		}
	run->completed += ph.n;
	return collected;
}

/*
 * The accounts with usage to deduct before the hour boundary $1 (of project $2 only, unless it
 * is null), in project order: a billing resource whose time before $1 is not yet in completed
 * hours, a booked hour before $1, or API usage rolled up before $1.  (Each account asks its
 * own index entries whether it is due: scalar subqueries, which the planner does not turn into
 * a hash of every billing resource, which took twice as long.  The projects with rolled-up
 * API usage are few rows, read once into a hash.)
 */
#define DUE_ACCOUNTS \
	"SELECT a.project_id, a.balance, a.deducted_until FROM credits.accounts a" \
	" WHERE ($2::bigint IS NULL OR a.project_id = $2)" \
	"   AND (coalesce((SELECT true FROM credits.resources r" \
	"                   WHERE r.project_id = a.project_id AND r.accrued_until < $1 LIMIT 1), false)" \
	"        OR coalesce((SELECT true FROM credits.transactions t" \
	"                      WHERE t.project_id = a.project_id AND t.status = 'accumulating'" \
	"                        AND t.usage_hour < $1 LIMIT 1), false)" \
	"        OR a.project_id IN (SELECT u.project_id FROM credits.usage_rollup u WHERE u.usage_hour < $1))" \
	" ORDER BY a.project_id"

/*
 * The deduction run of credits._deduct_ended_hours(cur, at[, only_project]); whole_charges
 * writes 0.1.0's usage amounts (minus the whole charge) and draws on the balance, as 0.1.0
 * did, instead of on the credit lots.
 */
static Datum
DeductEndedHours(FunctionCallInfo fcinfo, bool whole_charges)
{
	DeductionRun run = {0};
	Oid			arg_types[2] = {TIMESTAMPTZOID, INT8OID};
	Datum		args[2];
	char		nulls[2] = {' ', ' '};
	SPITupleTable *accounts;
	TupleDesc	accounts_desc;
	MemoryContext call_cxt = CurrentMemoryContext;
	Oid			relid;
	Oid			credits_type;
	uint64		naccounts;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	run.whole_charges = whole_charges;
	run.with_lots = !whole_charges;
	run.cur = PG_GETARG_TIMESTAMPTZ(0);
	run.at = PG_GETARG_TIMESTAMPTZ(1);
	args[0] = TimestampTzGetDatum(run.cur);
	if (PG_NARGS() > 2 && !PG_ARGISNULL(2))
		args[1] = PG_GETARG_DATUM(2);
	else
		nulls[1] = 'n';
	SPI_connect();
	relid = SetUpTargets(&run);

	/*
	 * 1. the due accounts, locked in project order, with their balances.  An account locked by
	 * another transaction is passed over: its hours wait for a later run, which catches them up.
	 */
	RunQuery(DUE_ACCOUNTS " FOR NO KEY UPDATE SKIP LOCKED", 2, arg_types, args, nulls, SPI_OK_SELECT);
	accounts = SPI_tuptable;
	accounts_desc = accounts->tupdesc;
	naccounts = SPI_processed;
	credits_type = SPI_gettypeid(accounts_desc, 2);
	run.credits_type = credits_type;
	run.call_cxt = call_cxt;
	{
		ArrayBuildState *due_ids = NULL;
		bool		isnull;

		for (uint64 i = 0; i < naccounts; i++)
			Collect(&run, &due_ids, SPI_getbinval(accounts->vals[i], accounts_desc, 1, &isnull), INT8OID);
		if (naccounts > 0)
			ReadLots(&run, due_ids,
					 DatumGetInt64(SPI_getbinval(accounts->vals[0], accounts_desc, 1, &isnull)),
					 DatumGetInt64(SPI_getbinval(accounts->vals[naccounts - 1], accounts_desc, 1, &isnull)),
					 naccounts);
	}

	/*
	 * 2. what they have booked, their rolled-up API usage and their billing resources, read
	 * after the locks (the rows of accounts passed over are passed over too)
	 */
	StreamOpen(&run.booked,
			   "SELECT t.project_id, t.usage_hour, t.resource_id, t.transaction_id, t.accrued_units, r.kind"
			   "  FROM credits.transactions t"
			   "  LEFT JOIN credits.resources r ON r.project_id = t.project_id AND r.resource_id = t.resource_id"
			   " WHERE t.status = 'accumulating' AND t.usage_hour < $1"
			   "   AND ($2::bigint IS NULL OR t.project_id = $2)"
			   " ORDER BY t.project_id, t.usage_hour, t.transaction_id",
			   2, arg_types, args, nulls);
	StreamOpen(&run.rolled_up,
			   "SELECT u.project_id, u.usage_hour, u.resource_id,"
			   "       credits._describe(coalesce(r.kind, 'api'), u.resource_id), u.units, r.kind"
			   "  FROM credits.usage_rollup u"
			   "  LEFT JOIN credits.resources r ON r.project_id = u.project_id AND r.resource_id = u.resource_id"
			   " WHERE u.usage_hour < $1 AND ($2::bigint IS NULL OR u.project_id = $2)"
			   " ORDER BY u.project_id",
			   2, arg_types, args, nulls);
	StreamOpen(&run.resources,
			   "SELECT r.project_id, r.rate_per_hour, r.accrued_until, r.resource_id,"
			   "       credits._describe(r.kind, r.resource_id), r.kind"
			   "  FROM credits.resources r"
			   " WHERE r.accrued_until < $1 AND ($2::bigint IS NULL OR r.project_id = $2)"
			   " ORDER BY r.project_id",
			   2, arg_types, args, nulls);
	/* 3. project by project: the hours, oldest first, against the lots */
	/*
	 * (no trigger fires on the new hours, bulk_insert.h: the one INSERT trigger of
	 * credits.transactions, transactions_known_references, checks that each row's project has
	 * an account, and every row written here belongs to an account locked in step 1)
	 */
	run.bulk = BulkInsertOpen(relid, false, "transactions_known_references");
	if (run.bulk == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("credits.transactions has an INSERT trigger the hourly deduction cannot fire"),
				 errhint("The deduction writes usage rows without an INSERT statement; drop or disable the trigger.")));
	run.project_cxt = AllocSetContextCreate(CurrentMemoryContext, "credits deduction project",
											ALLOCSET_DEFAULT_SIZES);
	for (uint64 i = 0; i < naccounts; i++)
	{
		bool		isnull;
		int64		project_id = DatumGetInt64(SPI_getbinval(accounts->vals[i], accounts_desc, 1, &isnull));
		Credits		balance = DatumGetCredits(SPI_getbinval(accounts->vals[i], accounts_desc, 2, &isnull));
		TimestampTz deducted_until = DatumGetTimestampTz(SPI_getbinval(accounts->vals[i], accounts_desc, 3, &isnull));
		MemoryContext old = MemoryContextSwitchTo(run.project_cxt);
		TimestampTz oldest_hour;
		Credits		collected = DeductProject(&run, project_id, balance, deducted_until, &oldest_hour);

		MemoryContextSwitchTo(old);
		MemoryContextReset(run.project_cxt);
		if (collected < 0)
			continue;			/* nothing due after all: its account stays as it is */
		Collect(&run, &run.debited_ids, Int64GetDatum(project_id), INT8OID);
		Collect(&run, &run.paid, CreditsGetDatum(collected), credits_type);
		Collect(&run, &run.oldest_hours, TimestampTzGetDatum(oldest_hour), TIMESTAMPTZOID);
	}
	BulkInsertClose(run.bulk);
	StreamClose(&run.booked);
	StreamClose(&run.rolled_up);
	StreamClose(&run.lots);
	StreamClose(&run.resources);
	CompleteBookedHours(&run);
	DeleteRolledUpHours(&run);
	UpdateLots(&run);
	CommandCounterIncrement();

	/* 4. the accounts debited, their clocks moved */
	DebitAccounts(&run);
	SPI_finish();
	PG_RETURN_INT64(run.completed);
}

/*
 * credits._deduct_ended_hours(cur timestamptz, at timestamptz, only_project bigint) → bigint:
 * every usage hour before cur (completing it at time at) of every due project, or of project
 * only_project, as the file comment says; returns the number of usage transactions completed.
 */
Datum
credits_deduct_hours(PG_FUNCTION_ARGS)
{
	return DeductEndedHours(fcinfo, false);
}

/*
 * The same under the symbol credits 0.1.0 names (with two arguments), for a database not yet
 * updated: it deducts exactly as 0.1.0 did, writing each usage hour's amount as minus its
 * whole charge (the form 0.1.0's views and verify() read, and that the update to 0.2.0
 * rewrites).
 */
Datum
credits_deduct_ended_hours(PG_FUNCTION_ARGS)
{
	return DeductEndedHours(fcinfo, true);
}

PG_FUNCTION_INFO_V1(credits_deduction_due);

/*
 * credits._deduction_due(cur timestamptz) → bigint[]: the projects with usage to deduct
 * before cur, in project order, locked or not (the deduction's own list, for its project by
 * project retry).
 */
Datum
credits_deduction_due(PG_FUNCTION_ARGS)
{
	Oid			arg_types[2] = {TIMESTAMPTZOID, INT8OID};
	Datum		args[2] = {PG_GETARG_DATUM(0), 0};
	char		nulls[2] = {' ', 'n'};
	ArrayBuildState *ids = initArrayResult(INT8OID, CurrentMemoryContext, false);
	MemoryContext cxt = CurrentMemoryContext;

	SPI_connect();
	RunQuery(DUE_ACCOUNTS, 2, arg_types, args, nulls, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		accumArrayResult(ids, SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull),
						 false, INT8OID, cxt);
	}
	SPI_finish();
	PG_RETURN_DATUM(makeArrayResult(ids, cxt));
}
