/*
 * bulk_insert.h — writes many rows into one table the way COPY does (bulk_insert.c).
 *
 *     BulkInsert *bulk = BulkInsertOpen(relid);
 *     TupleTableSlot *slot = BulkInsertNextSlot(bulk);    -- fill tts_values / tts_isnull
 *     BulkInsertAdd(bulk);                                 -- checks constraints, may flush
 *     ...
 *     BulkInsertClose(bulk);                               -- flushes the rest
 *
 * Heap pages are written and WAL-logged a page at a time (table_multi_insert); every index is
 * maintained (unique ones checked) and every CHECK and NOT NULL constraint is checked, row by
 * row.  No trigger fires: callers write only rows whose references they hold locked.  The
 * values of a slot must stay valid until the next flush: allocate them in
 * BulkInsertRowContext(bulk), which is reset after each flush.
 */
#ifndef BULK_INSERT_H
#define BULK_INSERT_H

#include "executor/tuptable.h"

typedef struct BulkInsert BulkInsert;

extern BulkInsert *BulkInsertOpen(Oid relid);
extern TupleTableSlot *BulkInsertNextSlot(BulkInsert *bulk);
extern MemoryContext BulkInsertRowContext(BulkInsert *bulk);
extern void BulkInsertAdd(BulkInsert *bulk);
extern uint64 BulkInsertClose(BulkInsert *bulk);

#endif
