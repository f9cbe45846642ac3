/*
 * lots.c — the draw-down of credit lots, shared by the hourly deduction (deduction.c) and by
 * what users read about accrued usage (credits._lots_left, for available_balance, the burn
 * rate's runway and the balance checks; credits._lots_paid, for the accumulating rows of the
 * history), so that both take the same credits from the same lots.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "lots.h"

/* The kind bit of a usage hour of a resource of kind ("instance", "volume"; else API). */
int
LotKindOf(const char *kind)
{
	if (kind != NULL && strcmp(kind, "instance") == 0)
		return LOT_KIND_INSTANCE;
	if (kind != NULL && strcmp(kind, "volume") == 0)
		return LOT_KIND_VOLUME;
	return LOT_KIND_API;
}

/* Compares two lots in draw-down order (see lots.h): < 0 when a is drawn on first. */
static int
DrawDownCompare(const void *pa, const void *pb)
{
	const Lot  *a = pa;
	const Lot  *b = pb;

	if (a->priority != b->priority)
		return a->priority < b->priority ? -1 : 1;
	if (a->expires != b->expires)
		return a->expires ? -1 : 1;
	if (a->expires && a->expires_at != b->expires_at)
		return a->expires_at < b->expires_at ? -1 : 1;
	if (a->promotional != b->promotional)
		return a->promotional ? -1 : 1;
	if (a->created_at != b->created_at)
		return a->created_at < b->created_at ? -1 : 1;
	if (a->transaction_id != b->transaction_id)
		return a->transaction_id < b->transaction_id ? -1 : 1;
	return 0;
}

/* Sorts lots in draw-down order. */
void
LotsSortForDrawDown(Lot *lots, int n)
{
	if (n > 1)
		qsort(lots, n, sizeof(Lot), DrawDownCompare);
}

/* Pays an hour of usage from the lots that may pay for it, in their order: see lots.h. */
Credits
LotsDraw(Lot *lots, int n, TimestampTz hour, int kind, Credits charge)
{
	Credits		paid = 0;

	for (int i = 0; i < n && paid < charge; i++)
	{
		Lot		   *lot = &lots[i];
		Credits		take;

		if ((lot->kinds & kind) == 0 || lot->expires_at <= hour || lot->left <= 0)
			continue;
		take = Min(lot->left, charge - paid);
		lot->left -= take;
		lot->drawn += take;
		paid += take;
	}
	return paid;
}

/* The elements of a one-dimensional array argument without nulls (none allowed). */
static Datum *
ArrayElements(ArrayType *array, Oid type, int *n)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum	   *values;
	bool	   *nulls;

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	deconstruct_array(array, type, typlen, typbyval, typalign, &values, &nulls, n);
	for (int i = 0; i < *n; i++)
		if (nulls[i] && type != TIMESTAMPTZOID)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("credits: null element in a draw-down argument")));
		else if (nulls[i])
			values[i] = TimestampTzGetDatum(DT_NOEND);
	return values;
}

/*
 * The draw-down of a project's accrued hours on its lots, from the six array arguments of
 * credits._lots_left / credits._lots_paid: lot_left credits[], lot_expires timestamptz[],
 * lot_kinds integer[] (the lots in draw-down order), hour_start timestamptz[], hour_kind
 * integer[], hour_amount credits[] (the hours in the deduction's order).  Returns the lots as
 * left by the hours, and what each hour took in paid[0..nhours).  A null expiry never comes.
 */
static Lot *
DrawAccruedHours(FunctionCallInfo fcinfo, Oid credits_elem, int *nlots, Credits **paid, int *nhours)
{
	int			nexp, nkinds, nhkinds, namounts;
	Datum	   *left = ArrayElements(PG_GETARG_ARRAYTYPE_P(0), credits_elem, nlots);
	Datum	   *expires = ArrayElements(PG_GETARG_ARRAYTYPE_P(1), TIMESTAMPTZOID, &nexp);
	Datum	   *kinds = ArrayElements(PG_GETARG_ARRAYTYPE_P(2), INT4OID, &nkinds);
	Datum	   *hours = ArrayElements(PG_GETARG_ARRAYTYPE_P(3), TIMESTAMPTZOID, nhours);
	Datum	   *hour_kinds = ArrayElements(PG_GETARG_ARRAYTYPE_P(4), INT4OID, &nhkinds);
	Datum	   *amounts = ArrayElements(PG_GETARG_ARRAYTYPE_P(5), credits_elem, &namounts);
	Lot		   *lots;

	if (nexp != *nlots || nkinds != *nlots || nhkinds != *nhours || namounts != *nhours)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("credits: draw-down arrays of different lengths")));
	lots = palloc0(sizeof(Lot) * Max(*nlots, 1));
	for (int i = 0; i < *nlots; i++)
	{
		lots[i].left = DatumGetCredits(left[i]);
		lots[i].expires_at = DatumGetTimestampTz(expires[i]);
		lots[i].kinds = DatumGetInt32(kinds[i]);
	}
	*paid = palloc0(sizeof(Credits) * Max(*nhours, 1));
	for (int i = 0; i < *nhours; i++)
	{
		Credits		charge = DatumGetCredits(amounts[i]);

		if (charge > 0)
			(*paid)[i] = LotsDraw(lots, *nlots, DatumGetTimestampTz(hours[i]),
								  DatumGetInt32(hour_kinds[i]), charge);
	}
	return lots;
}

/* A one-dimensional array of n credits values. */
static ArrayType *
CreditsArray(Oid credits_elem, Datum *values, int n)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(credits_elem, &typlen, &typbyval, &typalign);
	return construct_array(values, n, credits_elem, typlen, typbyval, typalign);
}

PG_FUNCTION_INFO_V1(credits_lots_left);

/*
 * credits._lots_left(lot_left, lot_expires, lot_kinds, hour_start, hour_kind, hour_amount) →
 * credits[]: what is left of each lot once the hours have drawn on them (DrawAccruedHours).
 */
Datum
credits_lots_left(PG_FUNCTION_ARGS)
{
	Oid			credits_elem = get_element_type(get_fn_expr_argtype(fcinfo->flinfo, 0));
	int			nlots, nhours;
	Credits    *paid;
	Lot		   *lots = DrawAccruedHours(fcinfo, credits_elem, &nlots, &paid, &nhours);
	Datum	   *result = palloc(sizeof(Datum) * Max(nlots, 1));

	for (int i = 0; i < nlots; i++)
		result[i] = CreditsGetDatum(lots[i].left);
	PG_RETURN_ARRAYTYPE_P(CreditsArray(credits_elem, result, nlots));
}

PG_FUNCTION_INFO_V1(credits_lots_paid);

/*
 * credits._lots_paid(lot_left, lot_expires, lot_kinds, hour_start, hour_kind, hour_amount) →
 * credits[]: what each hour takes from the lots (DrawAccruedHours); the rest of its amount is
 * what it would leave uncollected.
 */
Datum
credits_lots_paid(PG_FUNCTION_ARGS)
{
	Oid			credits_elem = get_element_type(get_fn_expr_argtype(fcinfo->flinfo, 0));
	int			nlots, nhours;
	Credits    *paid;
	Datum	   *result;

	DrawAccruedHours(fcinfo, credits_elem, &nlots, &paid, &nhours);
	result = palloc(sizeof(Datum) * Max(nhours, 1));
	for (int i = 0; i < nhours; i++)
		result[i] = CreditsGetDatum(paid[i]);
	PG_RETURN_ARRAYTYPE_P(CreditsArray(credits_elem, result, nhours));
}
