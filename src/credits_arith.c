/*
 * credits_arith.c
 *		Arithmetic of credits with credits and with integers, abs, and the
 *		integer casts.  Every operation is checked for overflow (22003);
 *		division rounds half to even (credits_round.c).
 *
 * Arithmetic with numeric lives in credits_numeric.c.
 */
#include "postgres.h"

#include "common/int.h"
#include "fmgr.h"

#include "credits.h"

PG_FUNCTION_INFO_V1(credits_pl);
PG_FUNCTION_INFO_V1(credits_mi);
PG_FUNCTION_INFO_V1(credits_um);
PG_FUNCTION_INFO_V1(credits_up);
PG_FUNCTION_INFO_V1(credits_abs);
PG_FUNCTION_INFO_V1(credits_mul_int8);
PG_FUNCTION_INFO_V1(int8_mul_credits);
PG_FUNCTION_INFO_V1(credits_mul_int4);
PG_FUNCTION_INFO_V1(int4_mul_credits);
PG_FUNCTION_INFO_V1(credits_div_int8);
PG_FUNCTION_INFO_V1(credits_div_int4);
PG_FUNCTION_INFO_V1(credits_from_int8);
PG_FUNCTION_INFO_V1(credits_from_int4);

/* a * b in int64, or 22003. */
static inline Credits
MulChecked(int64 a, int64 b)
{
	int64		result;

	if (unlikely(pg_mul_s64_overflow(a, b, &result)))
		CreditsOutOfRange();
	return result;
}

/* credits + credits */
Datum
credits_pl(PG_FUNCTION_ARGS)
{
	Credits		result;

	if (unlikely(pg_add_s64_overflow(PG_GETARG_CREDITS(0), PG_GETARG_CREDITS(1), &result)))
		CreditsOutOfRange();
	PG_RETURN_CREDITS(result);
}

/* credits - credits */
Datum
credits_mi(PG_FUNCTION_ARGS)
{
	Credits		result;

	if (unlikely(pg_sub_s64_overflow(PG_GETARG_CREDITS(0), PG_GETARG_CREDITS(1), &result)))
		CreditsOutOfRange();
	PG_RETURN_CREDITS(result);
}

/* - credits; the minimum has no positive counterpart */
Datum
credits_um(PG_FUNCTION_ARGS)
{
	Credits		value = PG_GETARG_CREDITS(0);

	if (unlikely(value == CREDITS_MIN))
		CreditsOutOfRange();
	PG_RETURN_CREDITS(-value);
}

/* + credits */
Datum
credits_up(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS(PG_GETARG_CREDITS(0));
}

/* abs(credits); the minimum has no positive counterpart */
Datum
credits_abs(PG_FUNCTION_ARGS)
{
	Credits		value = PG_GETARG_CREDITS(0);

	if (unlikely(value == CREDITS_MIN))
		CreditsOutOfRange();
	PG_RETURN_CREDITS(value < 0 ? -value : value);
}

/* credits * bigint */
Datum
credits_mul_int8(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS(MulChecked(PG_GETARG_CREDITS(0), PG_GETARG_INT64(1)));
}

/* bigint * credits */
Datum
int8_mul_credits(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS(MulChecked(PG_GETARG_INT64(0), PG_GETARG_CREDITS(1)));
}

/* credits * integer */
Datum
credits_mul_int4(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS(MulChecked(PG_GETARG_CREDITS(0), (int64) PG_GETARG_INT32(1)));
}

/* integer * credits */
Datum
int4_mul_credits(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS(MulChecked((int64) PG_GETARG_INT32(0), PG_GETARG_CREDITS(1)));
}

/* credits / bigint, rounded half to even */
Datum
credits_div_int8(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS(CreditsDivRound64(PG_GETARG_CREDITS(0), PG_GETARG_INT64(1)));
}

/* credits / integer, rounded half to even */
Datum
credits_div_int4(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS(CreditsDivRound64(PG_GETARG_CREDITS(0), (int64) PG_GETARG_INT32(1)));
}

/* bigint -> credits: whole credits */
Datum
credits_from_int8(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS(MulChecked(PG_GETARG_INT64(0), CREDITS_SCALE));
}

/* integer -> credits: whole credits, always in range */
Datum
credits_from_int4(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS((Credits) PG_GETARG_INT32(0) * CREDITS_SCALE);
}
