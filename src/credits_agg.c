/*
 * credits_agg.c
 *		sum(credits) and avg(credits): exact, with an int128 running sum so
 *		that no intermediate total can overflow, and combine, serialize and
 *		deserialize functions so that both run in parallel.  Both also work
 *		as moving aggregates in window frames (an inverse transition).
 *
 * The result is checked against the credits range only at the end: a sum
 * that leaves the range raises 22003; avg rounds half to even.
 * min and max reuse int8smaller and int8larger (see 10_type.sql).
 *
 * Two internal aggregates over the same state total usage, where one
 * project's runaway usage must not make a statement fail for every project:
 * credits._usage_total saturates at the range's ends, and credits._units_sum
 * returns the total as rate-microseconds (usage_math.c), a numeric.
 */
#include "postgres.h"

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "libpq/pqformat.h"

#include "credits.h"
#include "usage_math.h"

PG_FUNCTION_INFO_V1(credits_agg_accum);
PG_FUNCTION_INFO_V1(credits_agg_accum_inv);
PG_FUNCTION_INFO_V1(credits_agg_combine);
PG_FUNCTION_INFO_V1(credits_agg_serialize);
PG_FUNCTION_INFO_V1(credits_agg_deserialize);
PG_FUNCTION_INFO_V1(credits_sum_final);
PG_FUNCTION_INFO_V1(credits_avg_final);
PG_FUNCTION_INFO_V1(credits_usage_total_final);
PG_FUNCTION_INFO_V1(credits_units_sum_final);

/* The transition state shared by sum and avg. */
typedef struct CreditsAggState
{
	int64		count;			/* non-null inputs */
	int128		sum;			/* their exact total in micro-credits */
} CreditsAggState;

/* serialized form: count, then the sum's high and low 64 bits */
#define CREDITS_AGG_STATE_BYTES (3 * sizeof(int64))

/* The aggregate memory context, or an error outside an aggregate. */
static MemoryContext
AggContext(FunctionCallInfo fcinfo, const char *caller)
{
	MemoryContext agg_context;

	if (!AggCheckCallContext(fcinfo, &agg_context))
		elog(ERROR, "%s called in non-aggregate context", caller);
	return agg_context;
}

/* A zeroed state in the aggregate memory context. */
static CreditsAggState *
NewState(FunctionCallInfo fcinfo, const char *caller)
{
	return (CreditsAggState *) MemoryContextAllocZero(AggContext(fcinfo, caller),
													  sizeof(CreditsAggState));
}

/* Transition: add one value (nulls are skipped). */
Datum
credits_agg_accum(PG_FUNCTION_ARGS)
{
	CreditsAggState *state;

	state = PG_ARGISNULL(0) ? NULL : (CreditsAggState *) PG_GETARG_POINTER(0);
	if (state == NULL)
		state = NewState(fcinfo, "credits_agg_accum");
	if (!PG_ARGISNULL(1))
	{
		state->count++;
		state->sum += (int128) PG_GETARG_CREDITS(1);
	}
	PG_RETURN_POINTER(state);
}

/* Inverse transition for moving windows: remove one value added before. */
Datum
credits_agg_accum_inv(PG_FUNCTION_ARGS)
{
	CreditsAggState *state;

	state = PG_ARGISNULL(0) ? NULL : (CreditsAggState *) PG_GETARG_POINTER(0);
	if (state == NULL)
		elog(ERROR, "credits_agg_accum_inv called with a null state");
	if (!PG_ARGISNULL(1))
	{
		state->count--;
		state->sum -= (int128) PG_GETARG_CREDITS(1);
	}
	PG_RETURN_POINTER(state);
}

/* Combine two partial states (parallel aggregation). */
Datum
credits_agg_combine(PG_FUNCTION_ARGS)
{
	CreditsAggState *state1;
	CreditsAggState *state2;

	state1 = PG_ARGISNULL(0) ? NULL : (CreditsAggState *) PG_GETARG_POINTER(0);
	state2 = PG_ARGISNULL(1) ? NULL : (CreditsAggState *) PG_GETARG_POINTER(1);
	if (state2 == NULL)
		PG_RETURN_POINTER(state1);
	if (state1 == NULL)
	{
		/* the result must live in the aggregate context, not in state2's */
		state1 = NewState(fcinfo, "credits_agg_combine");
		*state1 = *state2;
		PG_RETURN_POINTER(state1);
	}
	state1->count += state2->count;
	state1->sum += state2->sum;
	PG_RETURN_POINTER(state1);
}

/* Serialize a state to bytea for a parallel worker's result. */
Datum
credits_agg_serialize(PG_FUNCTION_ARGS)
{
	CreditsAggState *state;
	StringInfoData buf;

	(void) AggContext(fcinfo, "credits_agg_serialize");
	state = (CreditsAggState *) PG_GETARG_POINTER(0);
	pq_begintypsend(&buf);
	pq_sendint64(&buf, state->count);
	pq_sendint64(&buf, (int64) (state->sum >> 64));
	pq_sendint64(&buf, (int64) (uint64) state->sum);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* Deserialize a state serialized by credits_agg_serialize. */
Datum
credits_agg_deserialize(PG_FUNCTION_ARGS)
{
	bytea	   *serialized = PG_GETARG_BYTEA_PP(0);
	CreditsAggState *state;
	StringInfoData buf;
	int64		high;
	uint64		low;

	state = NewState(fcinfo, "credits_agg_deserialize");
	if (VARSIZE_ANY_EXHDR(serialized) != CREDITS_AGG_STATE_BYTES)
		elog(ERROR, "credits aggregate state has %zu bytes, expected %zu",
			 (size_t) VARSIZE_ANY_EXHDR(serialized), (size_t) CREDITS_AGG_STATE_BYTES);

	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, VARDATA_ANY(serialized), VARSIZE_ANY_EXHDR(serialized));
	state->count = pq_getmsgint64(&buf);
	high = pq_getmsgint64(&buf);
	low = (uint64) pq_getmsgint64(&buf);
	pq_getmsgend(&buf);
	pfree(buf.data);

	state->sum = (int128) (((uint128) (uint64) high << 64) | (uint128) low);
	PG_RETURN_POINTER(state);
}

/* A final function's state, or NULL when the aggregate had no input. */
static CreditsAggState *
FinalState(FunctionCallInfo fcinfo)
{
	CreditsAggState *state = PG_ARGISNULL(0) ? NULL : (CreditsAggState *) PG_GETARG_POINTER(0);

	return state != NULL && state->count > 0 ? state : NULL;
}

/* sum: the exact total, NULL without input, 22003 outside the range. */
Datum
credits_sum_final(PG_FUNCTION_ARGS)
{
	CreditsAggState *state = FinalState(fcinfo);

	if (state == NULL)
		PG_RETURN_NULL();
	PG_RETURN_CREDITS(CreditsFromInt128(state->sum));
}

/* avg: the total over the count rounded half to even, NULL without input. */
Datum
credits_avg_final(PG_FUNCTION_ARGS)
{
	CreditsAggState *state = FinalState(fcinfo);

	if (state == NULL)
		PG_RETURN_NULL();
	PG_RETURN_CREDITS(CreditsDivRound128(state->sum, state->count));
}

/*
 * credits._usage_total: the total clamped to [-max, max] credits, NULL without input.  A
 * usage total past the range is more than any balance holds, so enforcing it as the range's
 * end collects exactly what the true total would.
 */
Datum
credits_usage_total_final(PG_FUNCTION_ARGS)
{
	CreditsAggState *state = FinalState(fcinfo);

	if (state == NULL)
		PG_RETURN_NULL();
	PG_RETURN_CREDITS(CreditsSaturate(state->sum));
}

/* credits._units_sum: the exact total as rate-microseconds (numeric), NULL without input. */
Datum
credits_units_sum_final(PG_FUNCTION_ARGS)
{
	CreditsAggState *state = FinalState(fcinfo);
	int128		limit = (((int128) 1) << 126) / USECS_PER_HOUR;

	if (state == NULL)
		PG_RETURN_NULL();
	/* (past 2^126 units: 2.4e22 credits, 2.4e13 calls at the largest amount one may record) */
	if (state->sum > limit || state->sum < -limit)
		CreditsOutOfRange();
	return UsageUnitsGetNumeric(state->sum * USECS_PER_HOUR);
}
