/*
 * fuzz_credits.c
 *		libFuzzer harness for the text form of credits (src/credits_parse.c).
 *
 * For every input it checks that
 *   - credits_parse agrees, result code and value, with an independent
 *     reference parser written here with 128-bit arithmetic;
 *   - whatever parses prints in the output form (optional '-', integer part
 *     without leading zeros, '.', 2 to 6 fraction digits, no trailing zero
 *     past the second), and parse(print(x)) == x;
 *   - the first 8 bytes, taken as any int64, print exactly as a reference
 *     printer built on snprintf prints them, and parse back to themselves.
 * A failed check aborts, which libFuzzer reports as a crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "credits_parse.h"

/* Report a broken property with the input and abort. */
static void
Fail(const char *what, const uint8_t *data, size_t size)
{
	size_t		i;

	fprintf(stderr, "credits fuzz: %s; input (%zu bytes):", what, size);
	for (i = 0; i < size; i++)
		fprintf(stderr, " %02x", data[i]);
	fprintf(stderr, "\n");
	abort();
}

/* The white space the grammar allows around a value. */
static int
RefSpace(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Reference parser: trims, then matches [+-]?D+(.D{1,6})? and computes in 128 bits. */
static CreditsParseResult
RefParse(const uint8_t *s, size_t n, int64_t *out)
{
	size_t		begin = 0;
	size_t		end = n;
	size_t		i;
	size_t		point = (size_t) -1;
	int			negative = 0;
	size_t		ndigits_int = 0;
	size_t		ndigits_frac = 0;
	__int128	value = 0;
	int			huge = 0;

	while (begin < end && RefSpace(s[begin]))
		begin++;
	while (end > begin && RefSpace(s[end - 1]))
		end--;
	if (begin < end && (s[begin] == '-' || s[begin] == '+'))
		negative = s[begin++] == '-';
	for (i = begin; i < end; i++)
	{
		if (s[i] == '.' && point == (size_t) -1)
			point = i;
		else if (s[i] < '0' || s[i] > '9')
			return CREDITS_PARSE_SYNTAX;
		else if (point == (size_t) -1)
			ndigits_int++;
		else
			ndigits_frac++;
	}
	if (ndigits_int == 0)
		return CREDITS_PARSE_SYNTAX;
	if (point != (size_t) -1 && (ndigits_frac < 1 || ndigits_frac > 6))
		return CREDITS_PARSE_SYNTAX;

	/* value in micro-credits; anything past 10^30 is out of range anyway */
	for (i = begin; i < end; i++)
	{
		if (s[i] == '.')
			continue;
		value = value * 10 + (s[i] - '0');
		if (value > (__int128) 1000000000000000000LL * 1000000000000LL)
		{
			huge = 1;
			value = 0;
		}
	}
	for (i = ndigits_frac; i < 6; i++)
		value *= 10;
	if (negative)
		value = -value;
	if (huge || value < (__int128) INT64_MIN || value > (__int128) INT64_MAX)
		return CREDITS_PARSE_RANGE;
	*out = (int64_t) value;
	return CREDITS_PARSE_OK;
}

/* Reference printer: snprintf of the parts, then trailing zeros trimmed to 2. */
static void
RefFormat(int64_t v, char *buf, size_t bufsize)
{
	unsigned long long magnitude = v < 0 ? 0ULL - (unsigned long long) v : (unsigned long long) v;
	size_t		len;

	len = (size_t) snprintf(buf, bufsize, "%s%llu.%06llu", v < 0 ? "-" : "",
							magnitude / 1000000ULL, magnitude % 1000000ULL);
	while (len > 0 && buf[len - 1] == '0' && buf[len - 3] != '.')
		buf[--len] = '\0';
}

/* True when s has the documented output form (2 to 6 fraction digits). */
static int
HasOutputForm(const char *s, int64_t v)
{
	const char *p = s;
	const char *frac;
	size_t		nfrac;

	if ((*p == '-') != (v < 0))
		return 0;
	if (*p == '-')
		p++;
	if (*p < '0' || *p > '9')
		return 0;
	if (*p == '0' && p[1] != '.')
		return 0;				/* no leading zeros */
	while (*p >= '0' && *p <= '9')
		p++;
	if (*p++ != '.')
		return 0;
	frac = p;
	while (*p >= '0' && *p <= '9')
		p++;
	if (*p != '\0')
		return 0;
	nfrac = (size_t) (p - frac);
	if (nfrac < 2 || nfrac > 6)
		return 0;
	if (nfrac > 2 && frac[nfrac - 1] == '0')
		return 0;
	return 1;
}

/* Print v and check the form, the reference printer, and the round trip. */
static void
CheckPrint(int64_t v, const uint8_t *data, size_t size)
{
	char		buf[CREDITS_TEXT_BUFLEN];
	char		ref[64];
	size_t		len;
	int64_t		back = 0;

	memset(buf, 0x7f, sizeof(buf));
	len = credits_format(v, buf);
	if (len >= CREDITS_TEXT_BUFLEN || buf[len] != '\0' || strlen(buf) != len)
		Fail("printed length wrong", data, size);
	if (!HasOutputForm(buf, v))
		Fail("printed form breaks the output rule", data, size);
	RefFormat(v, ref, sizeof(ref));
	if (strcmp(buf, ref) != 0)
		Fail("printed form differs from the reference printer", data, size);
	if (credits_parse(buf, len, &back) != CREDITS_PARSE_OK || back != v)
		Fail("parse(print(x)) != x", data, size);
}

/* libFuzzer entry point. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int64_t		value = 0;
	int64_t		ref_value = 0;
	CreditsParseResult result;
	CreditsParseResult ref_result;
	char	   *copy;

	/* parse an exact-size heap copy, so ASan sees any read past the end */
	copy = malloc(size ? size : 1);
	if (size)
		memcpy(copy, data, size);
	result = credits_parse(copy, size, &value);
	free(copy);

	ref_result = RefParse(data, size, &ref_value);
	if (result != ref_result)
		Fail("result code differs from the reference parser", data, size);
	if (result == CREDITS_PARSE_OK)
	{
		if (value != ref_value)
			Fail("value differs from the reference parser", data, size);
		CheckPrint(value, data, size);
	}

	if (size >= 8)
	{
		int64_t		raw;

		memcpy(&raw, data, sizeof(raw));
		CheckPrint(raw, data, size);
	}
	return 0;
}
