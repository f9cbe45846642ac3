/*
 * bulk_insert.h — rows written into one table through the executor's own pieces, without an
 * INSERT statement (bulk_insert.c): the one way the extension does that, used by the hourly
 * deduction (many rows, a page at a time, as COPY does) and by record_usage (one row).
 *
 * The rule for constraints and triggers: every CHECK and NOT NULL constraint is checked and
 * every index maintained (unique ones checked), row by row, as an INSERT would; no trigger
 * fires.  So BulkInsertOpen refuses a table (returns NULL, having opened nothing) that has an
 * enabled INSERT trigger, row or statement, other than the one the caller names in made_good:
 * a trigger whose check the caller makes hold by itself, and says how where it calls.  A
 * caller that gets NULL takes a path with an INSERT statement, or raises.
 *
 *     BulkInsert *bulk = BulkInsertOpen(relid, one_row, made_good);
 *     TupleTableSlot *slot = BulkInsertNextSlot(bulk);    -- fill tts_values / tts_isnull
 *     BulkInsertAdd(bulk);                                 -- checks constraints, may write
 *     ...
 *     BulkInsertClose(bulk);                               -- writes the rest
 *
 * With one_row, each row is written as it is added; otherwise rows are buffered and heap
 * pages written and WAL-logged a page at a time (table_multi_insert).  The values of a slot
 * must stay valid until the next write: allocate them in BulkInsertRowContext(bulk), which is
 * reset after each.
 */
#ifndef BULK_INSERT_H
#define BULK_INSERT_H

#include "executor/tuptable.h"

typedef struct BulkInsert BulkInsert;

extern BulkInsert *BulkInsertOpen(Oid relid, bool one_row, const char *made_good);
extern TupleTableSlot *BulkInsertNextSlot(BulkInsert *bulk);
extern MemoryContext BulkInsertRowContext(BulkInsert *bulk);
extern void BulkInsertAdd(BulkInsert *bulk);
extern uint64 BulkInsertClose(BulkInsert *bulk);

#endif
