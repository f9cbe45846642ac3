/*
 * lots.c — the draw-down of credit lots, shared by the hourly deduction (deduction.c) and by
 * what users read about accrued usage (credits._lots_left, for available_balance, the burn
 * rate's runway and the balance checks), so that both take the same credits from the same lots.
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

PG_FUNCTION_INFO_V1(credits_lots_left);

/*
 * credits._lots_left(lot_left credits[], lot_expires timestamptz[], lot_kinds integer[],
 * hour_start timestamptz[], hour_kind integer[], hour_amount credits[]) → credits[]: what is
 * left of each lot (given in draw-down order) once the hours (given oldest first) have drawn
 * on them.  A null expiry never comes.
 */
Datum
credits_lots_left(PG_FUNCTION_ARGS)
{
	Oid			credits_type = get_fn_expr_argtype(fcinfo->flinfo, 0);
	Oid			credits_elem = get_element_type(credits_type);
	int			nlots, nexp, nkinds, nhours, nhkinds, namounts;
	Datum	   *left = ArrayElements(PG_GETARG_ARRAYTYPE_P(0), credits_elem, &nlots);
	Datum	   *expires = ArrayElements(PG_GETARG_ARRAYTYPE_P(1), TIMESTAMPTZOID, &nexp);
	Datum	   *kinds = ArrayElements(PG_GETARG_ARRAYTYPE_P(2), INT4OID, &nkinds);
	Datum	   *hours = ArrayElements(PG_GETARG_ARRAYTYPE_P(3), TIMESTAMPTZOID, &nhours);
	Datum	   *hour_kinds = ArrayElements(PG_GETARG_ARRAYTYPE_P(4), INT4OID, &nhkinds);
	Datum	   *amounts = ArrayElements(PG_GETARG_ARRAYTYPE_P(5), credits_elem, &namounts);
	Lot		   *lots;
	Datum	   *result;
	int16		typlen;
	bool		typbyval;
	char		typalign;

	if (nexp != nlots || nkinds != nlots || nhkinds != nhours || namounts != nhours)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("credits: draw-down arrays of different lengths")));
	lots = palloc0(sizeof(Lot) * Max(nlots, 1));
	for (int i = 0; i < nlots; i++)
	{
		lots[i].left = DatumGetCredits(left[i]);
		lots[i].expires_at = DatumGetTimestampTz(expires[i]);
		lots[i].kinds = DatumGetInt32(kinds[i]);
	}
	for (int i = 0; i < nhours; i++)
	{
		Credits		charge = DatumGetCredits(amounts[i]);

		if (charge > 0)
			LotsDraw(lots, nlots, DatumGetTimestampTz(hours[i]), DatumGetInt32(hour_kinds[i]), charge);
	}
	result = palloc(sizeof(Datum) * Max(nlots, 1));
	for (int i = 0; i < nlots; i++)
		result[i] = CreditsGetDatum(lots[i].left);
	get_typlenbyvalalign(credits_elem, &typlen, &typbyval, &typalign);
	PG_RETURN_ARRAYTYPE_P(construct_array(result, nlots, credits_elem, typlen, typbyval, typalign));
}
