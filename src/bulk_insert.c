/*
 * bulk_insert.c — many rows into one table, COPY's way (see bulk_insert.h).
 *
 * An INSERT ... SELECT writes and WAL-logs each heap tuple on its own; table_multi_insert
 * fills a page at a time.  The executor pieces are the ones COPY FROM sets up: a one-entry
 * range table, a result relation with its indexes open, a bulk-insert state.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
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
	TupleTableSlot *slots[BULK_INSERT_BATCH];
	int			nused;
	uint64		inserted;
};

/* Opens relid for bulk insertion (taking RowExclusiveLock) with its indexes. */
BulkInsert *
BulkInsertOpen(Oid relid)
{
	BulkInsert *bulk = palloc0(sizeof(BulkInsert));
	RangeTblEntry *rte = makeNode(RangeTblEntry);

	LockRelationOid(relid, RowExclusiveLock);
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
	bulk->bistate = GetBulkInsertState();
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
	if (++bulk->nused == BULK_INSERT_BATCH)
		BulkInsertFlush(bulk);
}

/* Writes what is left, releases everything but the lock; returns the rows written. */
uint64
BulkInsertClose(BulkInsert *bulk)
{
	uint64		inserted;

	if (bulk->nused > 0)
		BulkInsertFlush(bulk);
	for (int i = 0; i < BULK_INSERT_BATCH && bulk->slots[i] != NULL; i++)
		ExecDropSingleTupleTableSlot(bulk->slots[i]);
	FreeBulkInsertState(bulk->bistate);
	table_finish_bulk_insert(bulk->rel, 0);
	ExecCloseResultRelations(bulk->estate);
	ExecCloseRangeTableRelations(bulk->estate);
	FreeExecutorState(bulk->estate);
	MemoryContextDelete(bulk->row_cxt);
	inserted = bulk->inserted;
	pfree(bulk);
	return inserted;
}
