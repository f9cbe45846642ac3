/*
 * credits_io.c
 *		Text and binary input/output of the credits type.
 *
 * The text form itself is parsed and printed in credits_parse.c; this file
 * turns its result codes into errors.  Every int64 is a valid credits
 * value, so recv checks exactly what in checks: that there are 8 bytes.
 */
#include "postgres.h"

#include <string.h>

#include "fmgr.h"
#include "libpq/pqformat.h"

#include "credits.h"
#include "credits_parse.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(credits_in);
PG_FUNCTION_INFO_V1(credits_out);
PG_FUNCTION_INFO_V1(credits_recv);
PG_FUNCTION_INFO_V1(credits_send);

/* Text to credits: the grammar of credits_parse.h, 22P02 or 22003 otherwise. */
Datum
credits_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);
	int64_t		value = 0;

	switch (credits_parse(str, strlen(str), &value))
	{
		case CREDITS_PARSE_OK:
			break;
		case CREDITS_PARSE_SYNTAX:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("invalid input syntax for type %s: \"%s\"",
							"credits", str),
					 errhint("Write an optional sign, digits, and optionally a point and 1 to 6 digits, as in \"12.50\".")));
			break;
		case CREDITS_PARSE_RANGE:
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("credits out of range"),
					 errdetail("Value \"%s\" is outside the range -9223372036854.775808 to 9223372036854.775807.",
							   str)));
			break;
	}
	PG_RETURN_CREDITS((Credits) value);
}

/* Credits to text: 2 to 6 fraction digits, no trailing zeros past the second. */
Datum
credits_out(PG_FUNCTION_ARGS)
{
	Credits		value = PG_GETARG_CREDITS(0);
	char	   *buf = palloc(CREDITS_TEXT_BUFLEN);

	credits_format((int64_t) value, buf);
	PG_RETURN_CSTRING(buf);
}

/* Binary to credits: 8 bytes, big-endian, as int8. */
Datum
credits_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);

	PG_RETURN_CREDITS((Credits) pq_getmsgint64(buf));
}

/* Credits to binary: 8 bytes, big-endian, as int8. */
Datum
credits_send(PG_FUNCTION_ARGS)
{
	Credits		value = PG_GETARG_CREDITS(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendint64(&buf, (int64) value);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}
