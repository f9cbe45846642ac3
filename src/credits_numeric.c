/*
 * credits_numeric.c
 *		Credits and numeric: the casts both ways, credits * numeric,
 *		credits / numeric and credits / credits.
 *
 * All of it is exact numeric arithmetic: a product is computed in full, a
 * quotient as an exact truncated quotient and remainder, and then rounded
 * half to even by comparing twice the remainder with the divisor.  No
 * float anywhere.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "credits.h"

PG_FUNCTION_INFO_V1(credits_from_numeric);
PG_FUNCTION_INFO_V1(credits_from_numeric_cast);
PG_FUNCTION_INFO_V1(credits_to_numeric);
PG_FUNCTION_INFO_V1(credits_mul_numeric);
PG_FUNCTION_INFO_V1(numeric_mul_credits);
PG_FUNCTION_INFO_V1(credits_div_numeric);
PG_FUNCTION_INFO_V1(credits_div_credits);

/* powers of ten up to the credits scale */
static const int64 PowersOf10[CREDITS_DIGITS + 1] = {
	1, 10, 100, 1000, 10000, 100000, 1000000
};

/* numeric constants built once per backend */
static Numeric NumericZero = NULL;
static Numeric NumericOne = NULL;
static Numeric NumericScale = NULL;
static Numeric NumericInt64Min = NULL;
static Numeric NumericInt64Max = NULL;

/* Build the numeric constants in TopMemoryContext on first use. */
static void
InitNumericConstants(void)
{
	MemoryContext old;

	if (NumericZero != NULL)
		return;
	old = MemoryContextSwitchTo(TopMemoryContext);
	NumericOne = int64_to_numeric(1);
	NumericScale = int64_to_numeric(CREDITS_SCALE);
	NumericInt64Min = int64_to_numeric(PG_INT64_MIN);
	NumericInt64Max = int64_to_numeric(PG_INT64_MAX);
	NumericZero = int64_to_numeric(0);
	MemoryContextSwitchTo(old);
}

/* numeric comparison: <0, 0 or >0 as a is less, equal or greater than b. */
static int
NumericCompare(Numeric a, Numeric b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp,
											 NumericGetDatum(a),
											 NumericGetDatum(b)));
}

/* Refuse NaN and infinities: they have no credits value. */
static void
CheckFinite(Numeric num)
{
	if (numeric_is_nan(num))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot convert NaN to credits")));
	if (numeric_is_inf(num))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot convert infinity to credits")));
}

/*
 * numerator / denominator (finite numerics, in micro-credits) rounded half
 * to even to an int64 count of micro-credits; 22012 on zero, 22003 out of range.
 */
static Credits
NumericDivRound(Numeric numerator, Numeric denominator)
{
	Numeric		quotient;
	Numeric		remainder;
	Credits		result;

	InitNumericConstants();
	if (NumericCompare(denominator, NumericZero) == 0)
		CreditsDivisionByZero();

	/* exact: numeric_div_trunc and numeric_mod divide without rounding */
	quotient = DatumGetNumeric(DirectFunctionCall2(numeric_div_trunc,
												   NumericGetDatum(numerator),
												   NumericGetDatum(denominator)));
	remainder = DatumGetNumeric(DirectFunctionCall2(numeric_mod,
													NumericGetDatum(numerator),
													NumericGetDatum(denominator)));

	/* rounding only moves away from zero, so a truncation outside stays outside */
	if (NumericCompare(quotient, NumericInt64Min) < 0 ||
		NumericCompare(quotient, NumericInt64Max) > 0)
		CreditsOutOfRange();
	result = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(quotient)));

	if (NumericCompare(remainder, NumericZero) != 0)
	{
		Numeric		rest = DatumGetNumeric(DirectFunctionCall1(numeric_abs,
															   NumericGetDatum(remainder)));
		Numeric		twice_rest = numeric_add_opt_error(rest, rest, NULL);
		Numeric		divisor = DatumGetNumeric(DirectFunctionCall1(numeric_abs,
																  NumericGetDatum(denominator)));
		int			cmp = NumericCompare(twice_rest, divisor);

		/* past the half, or exactly half with an odd quotient: away from zero */
		if (cmp > 0 || (cmp == 0 && (result & 1) != 0))
		{
			bool		negative = (NumericCompare(remainder, NumericZero) < 0) !=
				(NumericCompare(denominator, NumericZero) < 0);

			if (negative ? result == CREDITS_MIN : result == CREDITS_MAX)
				CreditsOutOfRange();
			result += negative ? -1 : 1;
		}
	}
	return result;
}

/* A numeric amount of credits as Credits, rounded half to even (NaN and infinities refused). */
Credits
CreditsFromNumeric(Numeric num)
{
	CheckFinite(num);
	InitNumericConstants();
	return NumericDivRound(numeric_mul_opt_error(num, NumericScale, NULL), NumericOne);
}

/* Credits as an exact numeric amount of credits, with 2 to 6 fraction digits. */
Numeric
CreditsToNumeric(Credits value)
{
	int64		whole = value / CREDITS_SCALE;
	int64		fraction = value % CREDITS_SCALE;	/* same sign as whole */
	int			digits = CREDITS_DIGITS;

	/* as many fraction digits as the text form shows */
	while (digits > 2 && fraction % PowersOf10[CREDITS_DIGITS - digits + 1] == 0)
		digits--;

	/* the two parts separately: each is small enough to convert exactly */
	return numeric_add_opt_error(int64_to_numeric(whole),
								 int64_div_fast_to_numeric(fraction / PowersOf10[CREDITS_DIGITS - digits],
														   digits),
								 NULL);
}

/* numeric -> credits, rounded half to even */
Datum
credits_from_numeric(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS(CreditsFromNumeric(PG_GETARG_NUMERIC(0)));
}

/*
 * The cast numeric -> credits.  Written with ::credits (explicit) it rounds half to even;
 * applied implicitly or on assignment it refuses (22023) a value that would have to round, so
 * that an amount passed by application code is never changed silently.
 */
Datum
credits_from_numeric_cast(PG_FUNCTION_ARGS)
{
	Numeric		num = PG_GETARG_NUMERIC(0);
	bool		is_explicit = PG_GETARG_BOOL(2);
	Credits		result = CreditsFromNumeric(num);

	if (!is_explicit && NumericCompare(CreditsToNumeric(result), num) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("numeric value %s has more than %d fraction digits and cannot become credits implicitly",
						DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(num))),
						CREDITS_DIGITS),
				 errhint("Round it first, or cast it explicitly with ::credits to round half to even.")));
	PG_RETURN_CREDITS(result);
}

/* credits -> numeric, exact */
Datum
credits_to_numeric(PG_FUNCTION_ARGS)
{
	PG_RETURN_NUMERIC(CreditsToNumeric(PG_GETARG_CREDITS(0)));
}

/* credits * numeric, the exact product rounded half to even. */
static Credits
MulNumeric(Credits value, Numeric factor)
{
	CheckFinite(factor);
	InitNumericConstants();
	return NumericDivRound(numeric_mul_opt_error(int64_to_numeric(value), factor, NULL),
						   NumericOne);
}

/* credits * numeric */
Datum
credits_mul_numeric(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS(MulNumeric(PG_GETARG_CREDITS(0), PG_GETARG_NUMERIC(1)));
}

/* numeric * credits */
Datum
numeric_mul_credits(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS(MulNumeric(PG_GETARG_CREDITS(1), PG_GETARG_NUMERIC(0)));
}

/* credits / numeric, the exact quotient rounded half to even */
Datum
credits_div_numeric(PG_FUNCTION_ARGS)
{
	Numeric		divisor = PG_GETARG_NUMERIC(1);

	CheckFinite(divisor);
	PG_RETURN_CREDITS(NumericDivRound(int64_to_numeric(PG_GETARG_CREDITS(0)), divisor));
}

/* credits / credits: a plain ratio, as numeric */
Datum
credits_div_credits(PG_FUNCTION_ARGS)
{
	Credits		divisor = PG_GETARG_CREDITS(1);

	if (divisor == 0)
		CreditsDivisionByZero();
	PG_RETURN_NUMERIC(numeric_div_opt_error(int64_to_numeric(PG_GETARG_CREDITS(0)),
											int64_to_numeric(divisor), NULL));
}
