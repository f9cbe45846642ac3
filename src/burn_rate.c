/*
 * burn_rate.c — the burn-rate aggregate: how many credits per hour a project consumes.
 *
 *     credits.burn_rate(amount credits, per interval) → credits per hour
 *
 * Each input is "amount every per": an instance's rate_per_hour with per = 1 hour, or the API
 * usage of a past period with per = that period's length.  Each is scaled to one hour exactly
 * (int128, rounded half to even to the micro-credit) and summed, clamped to the credits
 * range's ends: usage past the range (sql/metering_runaway.sql) must not make a project's
 * overview, or the view of every project, fail.  The state is a credits value, so the
 * aggregate runs in parallel with a plain combine step.
 */
#include "postgres.h"

#include "common/int.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/timestamp.h"

#include "credits.h"

/* The length of a positive, month-free interval in microseconds, or an error. */
static int64
PeriodMicroseconds(const Interval *per)
{
	int64		usecs;

	if (per->month != 0 ||
		pg_mul_s64_overflow((int64) per->day, USECS_PER_DAY, &usecs) ||
		pg_add_s64_overflow(usecs, per->time, &usecs) || usecs <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("burn rate period must be a positive interval without months")));
	return usecs;
}

/*
 * a + b, clamped to [-max, max] credits.  (With inputs of one sign, as a project's rates and
 * usage are, the order of the additions does not change the result, in parallel or not.)
 */
static Credits
ClampedSum(Credits a, Credits b)
{
	return CreditsSaturate((int128) a + (int128) b);
}

PG_FUNCTION_INFO_V1(credits_burn_rate_accum);

/* Adds amount-per-period, scaled to one hour, to the running credits-per-hour total. */
Datum
credits_burn_rate_accum(PG_FUNCTION_ARGS)
{
	Credits		total = PG_GETARG_CREDITS(0);
	Credits		amount = PG_GETARG_CREDITS(1);
	Interval   *per = PG_GETARG_INTERVAL_P(2);
	int128		scaled = (int128) amount * USECS_PER_HOUR;
	int64		usecs = PeriodMicroseconds(per);
	int128		truncated = scaled / usecs;
	Credits		hourly;

	/* (scaled to an hour, past the range only when per is shorter than an hour) */
	if (truncated >= (int128) CREDITS_MAX || truncated <= -(int128) CREDITS_MAX)
		hourly = CreditsSaturate(truncated);
	else
		hourly = CreditsDivRound128(scaled, usecs);
	PG_RETURN_CREDITS(ClampedSum(total, hourly));
}

PG_FUNCTION_INFO_V1(credits_burn_rate_combine);

/* Adds two partial burn rates (parallel aggregation). */
Datum
credits_burn_rate_combine(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS(ClampedSum(PG_GETARG_CREDITS(0), PG_GETARG_CREDITS(1)));
}
