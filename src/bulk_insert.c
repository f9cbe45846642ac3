/*
 * bulk_insert.c — rows into one table without an INSERT statement (see bulk_insert.h for the
 * rule on constraints and triggers).
 *
 * An INSERT ... SELECT writes and WAL-logs each heap tuple on its own; table_multi_insert
 * fills a page at a time.  The executor pieces are the ones COPY FROM sets up: a one-entry
 * range table, a result relation with its indexes open, a bulk-insert state (not for one row).
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "bulk_insert.h"

/* Rows buffered between flushes (COPY's MAX_BUFFERED_TUPLES). */
#define BULK_INSERT_BATCH 1000

struct BulkInsert
{
	EState	   *estate;
	ResultRelInfo *rri;
	Relation	rel;
	BulkInsertState bistate;
	CommandId	cid;
	MemoryContext cxt;			/* where it was opened: the slots live there */
	MemoryContext row_cxt;		/* the values of the buffered rows */
	bool		one_row;		/* each row written as it is added */
	int			capacity;		/* rows buffered before a write */
	TupleTableSlot **slots;
	int			nused;
	uint64		inserted;
};

/* Whether rel has an enabled INSERT trigger other than the one named made_good. */
static bool
HasOtherInsertTrigger(Relation rel, const char *made_good)
{
	TriggerDesc *triggers = rel->trigdesc;

	for (int i = 0; triggers != NULL && i < triggers->numtriggers; i++)
	{
		Trigger    *t = &triggers->triggers[i];

		if (TRIGGER_FOR_INSERT(t->tgtype) && t->tgenabled != TRIGGER_DISABLED &&
			(made_good == NULL || strcmp(t->tgname, made_good) != 0))
			return true;
	}
	return false;
}

/*
 * Opens relid (taking RowExclusiveLock) with its indexes for rows to be added, one at a time
 * or buffered; NULL, with nothing opened, when an INSERT trigger other than made_good would
 * have to fire (see bulk_insert.h).
 */
BulkInsert *
BulkInsertOpen(Oid relid, bool one_row, const char *made_good)
{
	BulkInsert *bulk;
	RangeTblEntry *rte;
	Relation	rel = table_open(relid, RowExclusiveLock);

	if (HasOtherInsertTrigger(rel, made_good))
	{
		table_close(rel, RowExclusiveLock);
		return NULL;
	}
	table_close(rel, NoLock);	/* (the executor opens it again below; the lock stays) */

	bulk = palloc0(sizeof(BulkInsert));
	bulk->one_row = one_row;
	bulk->capacity = one_row ? 1 : BULK_INSERT_BATCH;
	bulk->slots = palloc0(bulk->capacity * sizeof(TupleTableSlot *));
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = relid;
	rte->relkind = RELKIND_RELATION;
	rte->rellockmode = RowExclusiveLock;

	bulk->estate = CreateExecutorState();
	ExecInitRangeTable(bulk->estate, list_make1(rte));
	bulk->rri = makeNode(ResultRelInfo);
	ExecInitResultRelation(bulk->estate, bulk->rri, 1);
	bulk->rel = bulk->rri->ri_RelationDesc;
	ExecOpenIndices(bulk->rri, false);
	bulk->bistate = one_row ? NULL : GetBulkInsertState();
	bulk->cid = GetCurrentCommandId(true);
	bulk->cxt = CurrentMemoryContext;
	bulk->row_cxt = AllocSetContextCreate(CurrentMemoryContext, "credits bulk insert rows",
										  ALLOCSET_DEFAULT_SIZES);
	return bulk;
}

/* The memory context to allocate the values of the rows being added in. */
MemoryContext
BulkInsertRowContext(BulkInsert *bulk)
{
	return bulk->row_cxt;
}

/* An empty slot for the next row: fill tts_values and tts_isnull, then BulkInsertAdd. */
TupleTableSlot *
BulkInsertNextSlot(BulkInsert *bulk)
{
	if (bulk->slots[bulk->nused] == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(bulk->cxt);

		bulk->slots[bulk->nused] = table_slot_create(bulk->rel, NULL);
		MemoryContextSwitchTo(old);
	}
	ExecClearTuple(bulk->slots[bulk->nused]);
	return bulk->slots[bulk->nused];
}

/* Writes the buffered rows: heap pages first, then each row's index entries. */
static void
BulkInsertFlush(BulkInsert *bulk)
{
	MemoryContext old = MemoryContextSwitchTo(GetPerTupleMemoryContext(bulk->estate));

	if (bulk->one_row)
		table_tuple_insert(bulk->rel, bulk->slots[0], bulk->cid, 0, NULL);
	else
		table_multi_insert(bulk->rel, bulk->slots, bulk->nused, bulk->cid, 0, bulk->bistate);
	MemoryContextSwitchTo(old);
	for (int i = 0; i < bulk->nused; i++)
	{
		list_free(ExecInsertIndexTuples(bulk->rri, bulk->slots[i], bulk->estate,
										false, false, NULL, NIL));
		ExecClearTuple(bulk->slots[i]);
	}
	ResetPerTupleExprContext(bulk->estate);
	MemoryContextReset(bulk->row_cxt);
	bulk->inserted += bulk->nused;
	bulk->nused = 0;
}

/* Takes the row filled into the last slot handed out: checks its constraints, buffers it. */
void
BulkInsertAdd(BulkInsert *bulk)
{
	TupleTableSlot *slot = bulk->slots[bulk->nused];

	ExecStoreVirtualTuple(slot);
	if (bulk->rel->rd_att->constr)
		ExecConstraints(bulk->rri, slot, bulk->estate);
	ResetPerTupleExprContext(bulk->estate);
	if (++bulk->nused == bulk->capacity)
		BulkInsertFlush(bulk);
}

/* Writes what is left, releases everything but the lock; returns the rows written. */
uint64
BulkInsertClose(BulkInsert *bulk)
{
	uint64		inserted;

	if (bulk->nused > 0)
		BulkInsertFlush(bulk);
	for (int i = 0; i < bulk->capacity && bulk->slots[i] != NULL; i++)
		ExecDropSingleTupleTableSlot(bulk->slots[i]);
	if (bulk->bistate)
		FreeBulkInsertState(bulk->bistate);
	table_finish_bulk_insert(bulk->rel, 0);
	ExecCloseResultRelations(bulk->estate);
	ExecCloseRangeTableRelations(bulk->estate);
	FreeExecutorState(bulk->estate);
	MemoryContextDelete(bulk->row_cxt);
	inserted = bulk->inserted;
	pfree(bulk->slots);
	pfree(bulk);
	return inserted;
}
