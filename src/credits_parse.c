/*
 * credits_parse.c
 *		Parser and printer for the text form of credits.
 *
 * No backend headers here: the backend wrappers in credits_io.c turn the
 * result codes into errors, and test/fuzz links this file alone.  Locale
 * independent: only ASCII digits, '.', signs and ASCII white space count.
 */
#include "credits_parse.h"

#define FRACTION_DIGITS 6

/* True for the ASCII white space characters accepted around a value. */
static int
IsSpace(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* True for an ASCII decimal digit. */
static int
IsDigit(char c)
{
	return c >= '0' && c <= '9';
}

/* acc * 10 - digit, accumulating negatively; returns 0 on int64 overflow. */
static int
AccumulateDigit(int64_t *acc, int digit)
{
	int64_t		shifted;

	if (__builtin_mul_overflow(*acc, (int64_t) 10, &shifted))
		return 0;
	return !__builtin_sub_overflow(shifted, (int64_t) digit, acc);
}

/* Parse len bytes at str into a count of micro-credits. */
CreditsParseResult
credits_parse(const char *str, size_t len, int64_t *result)
{
	const char *p = str;
	const char *end = str + len;
	const char *int_start;
	const char *int_end;
	const char *frac_start = NULL;
	const char *frac_end = NULL;
	int			negative = 0;
	int64_t		acc = 0;
	int			i;

	/* First the syntax, so that malformed input is always a syntax error. */
	while (p < end && IsSpace(*p))
		p++;
	if (p < end && (*p == '+' || *p == '-'))
	{
		negative = (*p == '-');
		p++;
	}
	int_start = p;
	while (p < end && IsDigit(*p))
		p++;
	int_end = p;
	if (int_end == int_start)
		return CREDITS_PARSE_SYNTAX;
	if (p < end && *p == '.')
	{
		p++;
		frac_start = p;
		while (p < end && IsDigit(*p))
			p++;
		frac_end = p;
		if (frac_end == frac_start || frac_end - frac_start > FRACTION_DIGITS)
			return CREDITS_PARSE_SYNTAX;
	}
	while (p < end && IsSpace(*p))
		p++;
	if (p != end)
		return CREDITS_PARSE_SYNTAX;

	/*
	 * Then the value, accumulated negatively (as core cash_in does) so that
	 * the most negative int64 parses; the fraction is padded to 6 digits.
	 */
	for (p = int_start; p < int_end; p++)
		if (!AccumulateDigit(&acc, *p - '0'))
			return CREDITS_PARSE_RANGE;
	p = frac_start;
	for (i = 0; i < FRACTION_DIGITS; i++)
	{
		int			digit = 0;

		if (p != NULL && p < frac_end)
			digit = *p++ - '0';
		if (!AccumulateDigit(&acc, digit))
			return CREDITS_PARSE_RANGE;
	}

	if (!negative)
	{
		if (acc == INT64_MIN)
			return CREDITS_PARSE_RANGE;
		acc = -acc;
	}
	*result = acc;
	return CREDITS_PARSE_OK;
}

/* Print a count of micro-credits into buf (CREDITS_TEXT_BUFLEN bytes); returns the length. */
size_t
credits_format(int64_t value, char *buf)
{
	uint64_t	magnitude;
	uint64_t	whole;
	uint64_t	fraction;
	char		digits[24];
	int			ndigits = 0;
	int			nfrac = FRACTION_DIGITS;
	size_t		len = 0;
	int			i;

	/* the magnitude in unsigned arithmetic, so INT64_MIN needs no special case */
	magnitude = value < 0 ? (uint64_t) 0 - (uint64_t) value : (uint64_t) value;
	whole = magnitude / 1000000;
	fraction = magnitude % 1000000;

	if (value < 0)
		buf[len++] = '-';
	do
	{
		digits[ndigits++] = (char) ('0' + whole % 10);
		whole /= 10;
	} while (whole > 0);
	while (ndigits > 0)
		buf[len++] = digits[--ndigits];

	buf[len++] = '.';
	for (i = FRACTION_DIGITS - 1; i >= 0; i--)
	{
		digits[i] = (char) ('0' + fraction % 10);
		fraction /= 10;
	}
	while (nfrac > 2 && digits[nfrac - 1] == '0')
		nfrac--;
	for (i = 0; i < nfrac; i++)
		buf[len++] = digits[i];
	buf[len] = '\0';
	return len;
}
