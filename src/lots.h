/*
 * lots.h — the draw-down of credit lots (lots.c): which lots pay for one usage hour.
 *
 * A project's balance is made of lots.  An hour of usage of one kind is paid from the lots that
 * may pay for it (the kind is among theirs, and they had not expired when the hour began),
 * taken in draw-down order (LotsSortForDrawDown; in SQL, credits._lot_queue): lowest priority,
 * soonest expiry (none last), promotional before paid, oldest; what they cannot cover is
 * uncollected.
 */
#ifndef LOTS_H
#define LOTS_H

#include "credits.h"

/* The kinds of usage, as bits of a lot's kinds (credits._kind_mask). */
#define LOT_KIND_INSTANCE	1
#define LOT_KIND_VOLUME		2
#define LOT_KIND_API		4
#define LOT_KIND_ALL		7

/* One lot as the draw-down sees it. */
typedef struct Lot
{
	int64		transaction_id; /* the deposit, auto-recharge or grant */
	Credits		left;			/* what usage may still take (remaining less held) */
	Credits		drawn;			/* what the hours drawn so far took */
	TimestampTz expires_at;		/* DT_NOEND when it never expires */
	int			kinds;			/* LOT_KIND_* bits */
	/* the other keys of the draw-down order */
	bool		expires;		/* has an expiry: one of 'infinity' (DT_NOEND too) still sorts
								 * before none, as NULLS LAST does in SQL */
	int			priority;
	bool		promotional;	/* a grant (else paid) */
	TimestampTz created_at;
} Lot;

/* The kind bit of a usage hour of a resource of kind ("instance", "volume"; else API). */
extern int	LotKindOf(const char *kind);

/* Sorts lots[0..n) in draw-down order. */
extern void LotsSortForDrawDown(Lot *lots, int n);

/*
 * Pays charge, an hour of usage of kind beginning at hour, from lots[0..n) in their order;
 * returns what they paid (the rest is uncollected).
 */
extern Credits LotsDraw(Lot *lots, int n, TimestampTz hour, int kind, Credits charge);

#endif
