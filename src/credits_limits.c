/*
 * credits_limits.c — the bounds of credits_limits.h as SQL reads them, and the lookup of the
 * extension's own relations.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "fmgr.h"
#include "utils/lsyscache.h"

#include "credits_limits.h"

PG_FUNCTION_INFO_V1(credits_max_id_chars);
PG_FUNCTION_INFO_V1(credits_max_amount);

/* credits._max_id_chars() → integer: the longest id, key or label, in characters. */
Datum
credits_max_id_chars(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(CREDITS_ID_MAX_CHARS);
}

/* credits._max_amount() → credits: the largest amount or rate one call may carry. */
Datum
credits_max_amount(PG_FUNCTION_ARGS)
{
	PG_RETURN_CREDITS(CREDITS_AMOUNT_MAX);
}

/* The OID of relation name in schema credits; an error when it is missing. */
Oid
CreditsRelid(const char *name)
{
	Oid			relid = get_relname_relid(name, get_namespace_oid("credits", false));

	if (!OidIsValid(relid))
		elog(ERROR, "credits: relation credits.%s is missing", name);
	return relid;
}
