/*
 * settings.c — the settings of credits and the clock every billing function reads.
 *
 * credits.clock            a timestamptz that replaces now() for billing (tests, replays)
 * credits.minimum_deposit  the smallest deposit add_credits and auto-recharge accept
 * credits.event_lease      how long a claimed, unacknowledged event stays with its worker
 * credits.volume_retention how long a volume stays inaccessible at zero balance before it is
 *                          deleted (empty: until the balance is positive again)
 *
 * All are PGC_SUSET: an application role must not be able to move billing time, lower the
 * minimum or have volumes deleted sooner.  PostgreSQL 15 remembers which role set a placeholder before this
 * library was loaded and refuses a non-superuser's value when the variable is defined here.
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "credits.h"
#include "credits_parse.h"

static char *credits_clock = NULL;
static char *credits_minimum_deposit = NULL;
static int	credits_event_lease = 300;
static char *credits_volume_retention = NULL;

void		_PG_init(void);

/*
 * Check hook of credits.minimum_deposit: an amount of credits, not negative.  Refusing a bad
 * value at SET time keeps it from breaking every later add_credits.
 */
static bool
CheckMinimumDeposit(char **newval, void **extra, GucSource source)
{
	int64_t		value;

	if (*newval == NULL)
		return true;
	switch (credits_parse(*newval, strlen(*newval), &value))
	{
		case CREDITS_PARSE_OK:
			if (value < 0)
			{
				GUC_check_errdetail("The minimum deposit must not be negative.");
				return false;
			}
			return true;
		case CREDITS_PARSE_RANGE:
			GUC_check_errdetail("The minimum deposit is outside the range of credits.");
			return false;
		default:
			GUC_check_errdetail("The minimum deposit must be an amount of credits, as in \"5.00\".");
			return false;
	}
}

/*
 * The interval a credits.volume_retention value names, or false (with errdetail) when it is
 * not a positive interval.  interval_in reports bad input by raising an error: it is caught
 * here so that a bad value is refused like any other setting's.
 */
static bool
ParseRetention(const char *text, Interval *result)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		*result = *DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(text),
														 ObjectIdGetDatum(InvalidOid),
														 Int32GetDatum(-1)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcontext);
		FlushErrorState();
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* Check hook of credits.volume_retention: empty, or a positive interval such as "30 days". */
static bool
CheckVolumeRetention(char **newval, void **extra, GucSource source)
{
	Interval	value;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (!ParseRetention(*newval, &value))
	{
		GUC_check_errdetail("The volume retention must be an interval, as in \"30 days\", or empty.");
		return false;
	}
	if (value.month < 0 || value.day < 0 || value.time < 0 ||
		(value.month == 0 && value.day == 0 && value.time == 0))
	{
		GUC_check_errdetail("The volume retention must be a positive interval.");
		return false;
	}
	return true;
}

/* Defines the settings when the library is loaded. */
void
_PG_init(void)
{
	DefineCustomStringVariable("credits.clock",
							   "Billing time used instead of now(), as a timestamptz.",
							   "Empty means the transaction's start time. Only for tests and replays.",
							   &credits_clock, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("credits.minimum_deposit",
							   "Smallest amount add_credits and auto-recharge accept.",
							   NULL, &credits_minimum_deposit, "5.00", PGC_SUSET, 0,
							   CheckMinimumDeposit, NULL, NULL);
	DefineCustomIntVariable("credits.event_lease",
							"How long a claimed event stays with its worker before it is handed out again.",
							NULL, &credits_event_lease, 300, 1, 86400 * 7, PGC_SUSET,
							GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("credits.volume_retention",
							   "How long a volume stays inaccessible at zero balance before it is deleted.",
							   "An interval such as \"30 days\". Empty keeps inaccessible volumes until the "
							   "balance is positive again.",
							   &credits_volume_retention, "", PGC_SUSET, 0,
							   CheckVolumeRetention, NULL, NULL);
	MarkGUCPrefixReserved("credits");
}

PG_FUNCTION_INFO_V1(credits_now);

/*
 * The last credits.clock parsed, and what its meaning depended on: the text, the transaction
 * (for 'now' and the like), the time zone and the date style.  The periodic runs call
 * credits.now() several times per resource: parsing the text every time cost about a third
 * of a balance check over 100,000 projects.
 */
static char *clock_cache_text = NULL;
static LocalTransactionId clock_cache_lxid = InvalidLocalTransactionId;
static pg_tz *clock_cache_zone = NULL;
static int	clock_cache_datestyle = -1;
static int	clock_cache_dateorder = -1;
static TimestampTz clock_cache_value;

/* credits.clock parsed as a timestamptz, from the cache when nothing it depends on changed. */
static TimestampTz
ClockValue(void)
{
	TimestampTz value;

	if (clock_cache_text != NULL && strcmp(clock_cache_text, credits_clock) == 0 &&
		clock_cache_lxid == MyProc->lxid && clock_cache_zone == session_timezone &&
		clock_cache_datestyle == DateStyle && clock_cache_dateorder == DateOrder)
		return clock_cache_value;

	value = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(credits_clock),
													ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
	if (clock_cache_text != NULL)
		pfree(clock_cache_text);
	clock_cache_text = MemoryContextStrdup(TopMemoryContext, credits_clock);
	clock_cache_lxid = MyProc->lxid;
	clock_cache_zone = session_timezone;
	clock_cache_datestyle = DateStyle;
	clock_cache_dateorder = DateOrder;
	clock_cache_value = value;
	return value;
}

/* The billing time: credits.clock when set, else the transaction's start time. */
TimestampTz
CreditsNow(void)
{
	if (credits_clock != NULL && credits_clock[0] != '\0')
		return ClockValue();
	return GetCurrentTransactionStartTimestamp();
}

/* credits.now() → timestamptz: CreditsNow() for SQL. */
Datum
credits_now(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(CreditsNow());
}

PG_FUNCTION_INFO_V1(credits_minimum_deposit_text);

/* The credits.minimum_deposit setting as text; SQL casts it to credits. */
Datum
credits_minimum_deposit_text(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(credits_minimum_deposit ? credits_minimum_deposit : "5.00"));
}

PG_FUNCTION_INFO_V1(credits_event_lease_interval);

/* The credits.event_lease setting as an interval. */
Datum
credits_event_lease_interval(PG_FUNCTION_ARGS)
{
	Interval   *lease = palloc0(sizeof(Interval));

	lease->time = (int64) credits_event_lease * USECS_PER_SEC;
	PG_RETURN_INTERVAL_P(lease);
}

PG_FUNCTION_INFO_V1(credits_volume_retention_interval);

/* The credits.volume_retention setting as an interval, or null when it is empty. */
Datum
credits_volume_retention_interval(PG_FUNCTION_ARGS)
{
	Interval   *retention = palloc(sizeof(Interval));

	if (credits_volume_retention == NULL || credits_volume_retention[0] == '\0' ||
		!ParseRetention(credits_volume_retention, retention))
		PG_RETURN_NULL();
	PG_RETURN_INTERVAL_P(retention);
}
