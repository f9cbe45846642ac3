/*
 * credits_parse.h
 *		Text form of the credits type, free of backend dependencies so that
 *		the fuzzer in test/fuzz can build it on its own.
 *
 * Input:  optional surrounding white space, optional sign, one or more
 *         digits, optionally '.' and 1 to 6 digits.
 * Output: optional '-', the integer part, '.', then 2 to 6 fraction digits
 *         with no trailing zeros past the second.
 */
#ifndef CREDITS_PARSE_H
#define CREDITS_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* "-9223372036854.775808" is 21 characters; with the terminator 22 */
#define CREDITS_TEXT_BUFLEN 32

typedef enum CreditsParseResult
{
	CREDITS_PARSE_OK = 0,
	CREDITS_PARSE_SYNTAX,		/* not of the form above: 22P02 */
	CREDITS_PARSE_RANGE			/* well formed but outside int64: 22003 */
} CreditsParseResult;

/* Parse len bytes at str into a count of micro-credits. */
extern CreditsParseResult credits_parse(const char *str, size_t len, int64_t *result);

/* Print a count of micro-credits into buf (CREDITS_TEXT_BUFLEN bytes); returns the length. */
extern size_t credits_format(int64_t value, char *buf);

#endif							/* CREDITS_PARSE_H */
