/*
 * usage_math.h — exact accrual of time-based charges (usage_math.c), for the deduction run.
 *
 * Units are "rate-microseconds": a rate in micro-credits per hour times billable
 * microseconds.  Stored as integer-valued numerics; worked on as int128.
 */
#ifndef USAGE_MATH_H
#define USAGE_MATH_H

#include "datatype/timestamp.h"
#include "utils/numeric.h"

#include "credits.h"

/* An integer-valued numeric of units as an int128 (22003 past 2^126, 22023 with a fraction). */
extern int128 UsageUnitsFromNumeric(Numeric num);

/* An int128 of units as a numeric Datum. */
extern Datum UsageUnitsGetNumeric(int128 value);

/* The amount that units come to, rounded half to even to the micro-credit, within ±max credits. */
extern Credits UsageAmount(int128 units);

/* The start of the UTC hour that ts falls in; infinities stay as they are. */
extern TimestampTz HourOf(TimestampTz ts);

/*
 * [from, upto) split at UTC hours, the one way billable time is split (the deduction and
 * credits._hour_segments both walk it):
 *     HourSegments s;
 *     HourSegmentsBegin(&s, from, upto);
 *     while (HourSegmentsNext(&s, &hour, &usecs)) ...
 * gives each hour that the interval touches and the microseconds of it inside the interval.
 */
typedef struct HourSegments
{
	TimestampTz from;
	TimestampTz upto;
	TimestampTz hour;			/* the next hour to give */
} HourSegments;

extern void HourSegmentsBegin(HourSegments *s, TimestampTz from, TimestampTz upto);
extern bool HourSegmentsNext(HourSegments *s, TimestampTz *hour, int64 *usecs);

#endif
