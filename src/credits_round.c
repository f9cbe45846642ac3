/*
 * credits_round.c
 *		The range check and the one rounding rule of the credits type:
 *		round half to even, exactly, in integer arithmetic.
 *
 * Declared in credits.h for every C file that computes with credits.
 */
#include "postgres.h"

#include "credits.h"

/* Raise 22003 "credits out of range". */
void
CreditsOutOfRange(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
			 errmsg("credits out of range")));
	pg_unreachable();
}

/* Raise 22012 "division by zero". */
void
CreditsDivisionByZero(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_DIVISION_BY_ZERO),
			 errmsg("division by zero")));
	pg_unreachable();
}

/* An int128 count of micro-credits as Credits, or 22003. */
Credits
CreditsFromInt128(int128 value)
{
	if (value < (int128) CREDITS_MIN || value > (int128) CREDITS_MAX)
		CreditsOutOfRange();
	return (Credits) value;
}

/* An int128 count of micro-credits clamped to [-max, max] credits. */
Credits
CreditsSaturate(int128 value)
{
	if (value > (int128) CREDITS_MAX)
		return CREDITS_MAX;
	if (value < -(int128) CREDITS_MAX)
		return -CREDITS_MAX;
	return (Credits) value;
}

/* numerator / denominator rounded half to even; 22012 on zero, 22003 out of range. */
Credits
CreditsDivRound128(int128 numerator, int64 denominator)
{
	int128		quotient;
	int128		remainder;

	if (denominator == 0)
		CreditsDivisionByZero();
	if (denominator == -1)
	{
		/* exact, and avoids the one overflowing int128 division */
		if (numerator < -(int128) CREDITS_MAX)
			CreditsOutOfRange();
		return CreditsFromInt128(-numerator);
	}

	quotient = numerator / denominator;		/* truncated toward zero */
	remainder = numerator % denominator;	/* same sign as numerator */
	if (remainder != 0)
	{
		int128		twice_rest = remainder < 0 ? -2 * remainder : 2 * remainder;
		int128		divisor = denominator < 0 ? -(int128) denominator : (int128) denominator;

		/* past the half, or exactly half with an odd quotient: away from zero */
		if (twice_rest > divisor || (twice_rest == divisor && (quotient & 1) != 0))
			quotient += ((numerator < 0) != (denominator < 0)) ? -1 : 1;
	}
	return CreditsFromInt128(quotient);
}

/* numerator / denominator rounded half to even, in int64 arithmetic only. */
Credits
CreditsDivRound64(int64 numerator, int64 denominator)
{
	int64		quotient;
	int64		remainder;

	if (denominator == 0)
		CreditsDivisionByZero();
	if (denominator == -1)
	{
		/* INT64_MIN / -1 is the one quotient that does not fit */
		if (numerator == CREDITS_MIN)
			CreditsOutOfRange();
		return -numerator;
	}

	quotient = numerator / denominator;
	remainder = numerator % denominator;
	if (remainder != 0)
	{
		/* |remainder| < |denominator| <= 2^63, so both fit in uint64 */
		uint64		rest = remainder < 0 ? (uint64) 0 - (uint64) remainder : (uint64) remainder;
		uint64		divisor = denominator < 0 ? (uint64) 0 - (uint64) denominator : (uint64) denominator;
		uint64		other = divisor - rest;

		/* |denominator| >= 2 here, so quotient +- 1 cannot overflow */
		if (rest > other || (rest == other && (quotient & 1) != 0))
			quotient += ((numerator < 0) != (denominator < 0)) ? -1 : 1;
	}
	return quotient;
}
