/*
 * credits.h
 *		The credits money type: a signed 64-bit count of micro-credits
 *		(1 credit = 1 000 000 micro-credits), shared by every C file that
 *		computes with credits (type support, aggregates, burn rate).
 *
 * Rounding rule, everywhere a result has more than 6 fraction digits:
 * round half to even.  Every result outside the int64 range raises
 * 22003 "credits out of range"; division by zero raises 22012.
 */
#ifndef CREDITS_H
#define CREDITS_H

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/numeric.h"

#ifndef HAVE_INT128
#error "credits needs a compiler with a native 128-bit integer type"
#endif

typedef int64 Credits;

/* micro-credits per credit, and the number of fraction digits */
#define CREDITS_SCALE		INT64CONST(1000000)
#define CREDITS_DIGITS		6

/* the range: -9223372036854.775808 .. 9223372036854.775807 credits */
#define CREDITS_MIN			PG_INT64_MIN
#define CREDITS_MAX			PG_INT64_MAX

#define DatumGetCredits(X)	((Credits) DatumGetInt64(X))
#define CreditsGetDatum(X)	Int64GetDatum((int64) (X))
#define PG_GETARG_CREDITS(n) DatumGetCredits(PG_GETARG_DATUM(n))
#define PG_RETURN_CREDITS(x) return CreditsGetDatum(x)

/* Raise 22003 "credits out of range". */
extern void CreditsOutOfRange(void) pg_attribute_noreturn();

/* Raise 22012 "division by zero". */
extern void CreditsDivisionByZero(void) pg_attribute_noreturn();

/* An int128 count of micro-credits as Credits, or 22003. */
extern Credits CreditsFromInt128(int128 value);

/*
 * An int128 count of micro-credits as Credits clamped to [-max, max]: for usage totals, where
 * an amount past the range is more than any balance holds (-max, not min, so that it negates).
 */
extern Credits CreditsSaturate(int128 value);

/* numerator / denominator rounded half to even; 22012 on zero, 22003 out of range. */
extern Credits CreditsDivRound128(int128 numerator, int64 denominator);

/* The same for an int64 numerator, without 128-bit division. */
extern Credits CreditsDivRound64(int64 numerator, int64 denominator);

/* A numeric amount of credits as Credits, rounded half to even (NaN and infinities refused). */
extern Credits CreditsFromNumeric(Numeric num);

/* Credits as an exact numeric amount of credits, with 2 to 6 fraction digits. */
extern Numeric CreditsToNumeric(Credits value);

/* The billing time every function reads: credits.clock when set, else now() (settings.c). */
extern TimestampTz CreditsNow(void);

#endif							/* CREDITS_H */
