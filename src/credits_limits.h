/*
 * credits_limits.h — the bounds on what one call may carry, written once.  SQL reads them
 * through credits._max_id_chars() and credits._max_amount() (src/credits_limits.c), so the
 * checks in C and in SQL cannot drift apart.
 *
 * An id, key or label is 1 to CREDITS_ID_MAX_CHARS characters.  An amount or rate is at most
 * CREDITS_AMOUNT_MAX micro-credits, so that the sums of a project's hour can never leave the
 * type's range and stop the periodic runs.
 */
#ifndef CREDITS_LIMITS_H
#define CREDITS_LIMITS_H

#include "credits.h"

#define CREDITS_ID_MAX_CHARS	200
#define CREDITS_AMOUNT_MAX		(INT64CONST(1000000000) * CREDITS_SCALE)

/* The OID of relation name in schema credits; an error when it is missing. */
extern Oid	CreditsRelid(const char *name);

#endif
