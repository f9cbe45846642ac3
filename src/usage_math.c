/*
 * usage_math.c — exact accrual of time-based charges.
 *
 * A usage hour accrues "rate-microseconds": the rate in micro-credits per hour times the
 * microseconds a resource was billable.  Stored as an integer-valued numeric, they add up
 * exactly however many start/stop segments an hour has, and the hour's amount is rounded
 * once, half to even, when it is shown or deducted:
 *
 *     amount (micro-credits) = round_half_even(units / 3 600 000 000)
 *
 * The arithmetic is done in int128: a rate of the largest credits value for a whole hour is
 * about 3.3e28 units, far inside int128's 1.7e38.
 */
#include "postgres.h"

#include "funcapi.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "credits.h"
#include "usage_math.h"

#define USECS_PER_HOUR_128 ((int128) USECS_PER_HOUR)

/* Prints an int128 in decimal into buf (at least 41 bytes). */
static void
Int128ToDecimal(int128 value, char *buf)
{
	char		digits[41];
	int			n = 0;
	bool		negative = value < 0;
	unsigned __int128 magnitude = negative ? -(unsigned __int128) value : (unsigned __int128) value;

	do
	{
		digits[n++] = '0' + (int) (magnitude % 10);
		magnitude /= 10;
	} while (magnitude != 0);
	if (negative)
		*buf++ = '-';
	while (n > 0)
		*buf++ = digits[--n];
	*buf = '\0';
}

/* Reads an integer-valued numeric (a fraction of zeros is allowed) into an int128. */
int128
UsageUnitsFromNumeric(Numeric num)
{
	char	   *text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(num)));
	char	   *p = text;
	bool		negative = false;
	unsigned __int128 magnitude = 0;
	const unsigned __int128 limit = ((unsigned __int128) 1) << 126;

	if (*p == '-')
	{
		negative = true;
		p++;
	}
	for (; *p >= '0' && *p <= '9'; p++)
	{
		if (magnitude >= limit / 10)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("accrued usage out of range")));
		magnitude = magnitude * 10 + (*p - '0');
	}
	if (*p == '.')
		for (p++; *p == '0'; p++)
			;
	if (*p != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("accrued usage must be a whole number of rate-microseconds: \"%s\"", text)));
	return negative ? -(int128) magnitude : (int128) magnitude;
}

/* Makes a numeric from an int128 (directly when it fits in an int64, as nearly all do). */
Datum
UsageUnitsGetNumeric(int128 value)
{
	char		buf[48];

	if (value >= PG_INT64_MIN && value <= PG_INT64_MAX)
		return NumericGetDatum(int64_to_numeric((int64) value));
	Int128ToDecimal(value, buf);
	return DirectFunctionCall3(numeric_in, CStringGetDatum(buf),
							   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
}

PG_FUNCTION_INFO_V1(credits_accrual);

/*
 * credits._accrual(rate_per_hour credits, from timestamptz, upto timestamptz) → numeric:
 * the rate-microseconds a resource billed at rate accrues over [from, upto); zero when the
 * interval is empty or reversed.
 */
Datum
credits_accrual(PG_FUNCTION_ARGS)
{
	int64		rate = PG_GETARG_INT64(0);
	TimestampTz from = PG_GETARG_TIMESTAMPTZ(1);
	TimestampTz upto = PG_GETARG_TIMESTAMPTZ(2);

	if (TIMESTAMP_NOT_FINITE(from) || TIMESTAMP_NOT_FINITE(upto))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("usage can only accrue between finite timestamps")));
	if (upto <= from)
		return UsageUnitsGetNumeric(0);
	return UsageUnitsGetNumeric((int128) rate * (int128) (upto - from));
}

PG_FUNCTION_INFO_V1(credits_accrued_amount);

/*
 * credits._accrued_amount(units numeric) → credits: the amount that units of
 * rate-microseconds come to, rounded half to even to the micro-credit (UsageAmount).
 */
Datum
credits_accrued_amount(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS(UsageAmount(UsageUnitsFromNumeric(PG_GETARG_NUMERIC(0))));
}

/*
 * The amount that units of rate-microseconds come to, half to even, clamped to [-max, max]
 * credits: an hour's charge past the range is more than any balance holds, so charging the
 * range's end collects exactly what the true amount would (its units stay exact).
 */
Credits
UsageAmount(int128 units)
{
	int128		limit = (int128) CREDITS_MAX * USECS_PER_HOUR_128;

	if (units >= limit)
		return CREDITS_MAX;
	if (units <= -limit)
		return -CREDITS_MAX;
	return CreditsDivRound128(units, USECS_PER_HOUR);
}

/* The start of the UTC hour that ts falls in; infinities stay as they are. */
TimestampTz
HourOf(TimestampTz ts)
{
	int64		into_hour;

	if (TIMESTAMP_NOT_FINITE(ts))
		return ts;
	/* (timestamps count microseconds from 2000-01-01 00:00 UTC, the start of an hour) */
	into_hour = ts % USECS_PER_HOUR;
	return ts - (into_hour < 0 ? into_hour + USECS_PER_HOUR : into_hour);
}

/* Starts walking [from, upto) hour by hour (finite times; an empty interval gives nothing). */
void
HourSegmentsBegin(HourSegments *s, TimestampTz from, TimestampTz upto)
{
	if (TIMESTAMP_NOT_FINITE(from) || TIMESTAMP_NOT_FINITE(upto))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("usage can only accrue between finite timestamps")));
	s->from = from;
	s->upto = upto;
	s->hour = HourOf(from);
}

/* The next hour of the walk and the microseconds of the interval inside it; false at the end. */
bool
HourSegmentsNext(HourSegments *s, TimestampTz *hour, int64 *usecs)
{
	if (s->hour >= s->upto)
		return false;
	*hour = s->hour;
	*usecs = Min(s->upto, s->hour + USECS_PER_HOUR) - Max(s->from, s->hour);
	s->hour += USECS_PER_HOUR;
	return true;
}

PG_FUNCTION_INFO_V1(credits_hour_segments);

/*
 * credits._hour_segments(rate_per_hour credits, from timestamptz, upto timestamptz) → table
 * (usage_hour timestamptz, units numeric): the UTC hours that [from, upto) touches, with the
 * rate-microseconds accrued in each.
 */
Datum
credits_hour_segments(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		rate = PG_GETARG_INT64(0);
	HourSegments s;
	TimestampTz hour;
	int64		usecs;

	InitMaterializedSRF(fcinfo, 0);
	if (PG_GETARG_TIMESTAMPTZ(2) <= PG_GETARG_TIMESTAMPTZ(1))
		return (Datum) 0;
	HourSegmentsBegin(&s, PG_GETARG_TIMESTAMPTZ(1), PG_GETARG_TIMESTAMPTZ(2));
	while (HourSegmentsNext(&s, &hour, &usecs))
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = TimestampTzGetDatum(hour);
		values[1] = UsageUnitsGetNumeric((int128) rate * (int128) usecs);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(credits_hour_of);

/* credits.hour_of(ts timestamptz) → timestamptz: the start of the UTC hour of ts. */
Datum
credits_hour_of(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(HourOf(PG_GETARG_TIMESTAMPTZ(0)));
}
