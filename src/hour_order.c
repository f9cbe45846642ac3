/*
 * hour_order.c — the order the hourly deduction gives a project's new usage hours their ids in:
 * by hour, then by resource id in byte order (strcmp).
 *
 * A project's new hours come resource by resource, each resource's hours in a row and sharing
 * one id string.  A comparison sort of all of them would cost more per hour the more hours a
 * catch-up or a big project has; instead the distinct ids are ranked once (a sort of the
 * resources, not of their hours), and two stable counting sorts, by rank then by hour, give the
 * order in time linear in the number of hours.  Hours scattered over a span longer than their
 * number, or not whole hours apart, are sorted by comparison instead.
 */
#include "postgres.h"

#include "hour_order.h"

/* The hours and ids being ordered, for the comparison sort. */
typedef struct HourIds
{
	const TimestampTz *hours;
	const char *const *ids;
} HourIds;

/* One run of hours that share an id string: the id, and the run's place among the runs. */
typedef struct IdRun
{
	const char *id;
	int			run;
} IdRun;

/* Orders two hours (indexes into HourIds) by hour, then id. */
static int
CompareHourIds(const void *a, const void *b, void *arg)
{
	const HourIds *in = arg;
	int			x = *(const int *) a;
	int			y = *(const int *) b;

	if (in->hours[x] != in->hours[y])
		return in->hours[x] < in->hours[y] ? -1 : 1;
	return strcmp(in->ids[x], in->ids[y]);
}

/* Orders two runs by their ids in byte order. */
static int
CompareRunIds(const void *a, const void *b)
{
	return strcmp(((const IdRun *) a)->id, ((const IdRun *) b)->id);
}

/*
 * Writes into out the items of in (all n of them; in NULL: 0..n-1) stably sorted by key[item],
 * each key in [0, nkeys).
 */
static void
StableByKey(int n, const int *in, const int *key, int nkeys, int *out)
{
	int		   *start = palloc0((nkeys + 1) * sizeof(int));

	for (int i = 0; i < n; i++)
		start[key[i] + 1]++;
	for (int k = 0; k < nkeys; k++)
		start[k + 1] += start[k];
	for (int i = 0; i < n; i++)
	{
		int			item = in ? in[i] : i;

		out[start[key[item]]++] = item;
	}
	pfree(start);
}

/*
 * The order of n hours (their starts and resource ids; no two alike) by hour, then id: a
 * palloc'd array of their indexes.
 */
int *
HourIdOrder(int n, const TimestampTz *hours, const char *const *ids)
{
	int		   *order = palloc(Max(n, 1) * sizeof(int));
	TimestampTz first;
	TimestampTz last;
	bool		whole = true;
	int64		nbuckets;
	IdRun	   *runs;
	int			nruns = 0;
	int		   *rank_of_run;
	int			nranks = 0;
	int		   *rank;
	int		   *bucket;
	int		   *by_rank;

	if (n == 0)
		return order;
	first = last = hours[0];
	for (int i = 1; i < n; i++)
	{
		first = Min(first, hours[i]);
		last = Max(last, hours[i]);
	}
	for (int i = 0; i < n && whole; i++)
		whole = (hours[i] - first) % USECS_PER_HOUR == 0;
	nbuckets = (last - first) / USECS_PER_HOUR + 1;
	if (!whole || nbuckets > n)
	{
		HourIds		in = {hours, ids};

		for (int i = 0; i < n; i++)
			order[i] = i;
		qsort_arg(order, n, sizeof(int), CompareHourIds, &in);
		return order;
	}

	/* the runs of hours with one id string, ranked by id */
	for (int i = 0; i < n; i++)
		if (i == 0 || ids[i] != ids[i - 1])
			nruns++;
	runs = palloc(nruns * sizeof(IdRun));
	nruns = 0;
	for (int i = 0; i < n; i++)
		if (i == 0 || ids[i] != ids[i - 1])
		{
			runs[nruns].id = ids[i];
			runs[nruns].run = nruns;
			nruns++;
		}
	qsort(runs, nruns, sizeof(IdRun), CompareRunIds);
	rank_of_run = palloc(nruns * sizeof(int));
	for (int j = 0; j < nruns; j++)
	{
		if (j > 0 && strcmp(runs[j].id, runs[j - 1].id) != 0)
			nranks++;
		rank_of_run[runs[j].run] = nranks;
	}
	nranks++;

	/* each hour's rank and hour bucket; sorted stably by rank, then by bucket */
	rank = palloc(n * sizeof(int));
	bucket = palloc(n * sizeof(int));
	for (int i = 0, r = -1; i < n; i++)
	{
		if (i == 0 || ids[i] != ids[i - 1])
			r++;
		rank[i] = rank_of_run[r];
		bucket[i] = (int) ((hours[i] - first) / USECS_PER_HOUR);
	}
	by_rank = palloc(n * sizeof(int));
	StableByKey(n, NULL, rank, nranks, by_rank);
	StableByKey(n, by_rank, bucket, (int) nbuckets, order);
	pfree(runs);
	pfree(rank_of_run);
	pfree(rank);
	pfree(bucket);
	pfree(by_rank);
	return order;
}
