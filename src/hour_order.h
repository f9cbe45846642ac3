/*
 * hour_order.h — the order the hourly deduction gives a project's new usage hours their ids in
 * (hour_order.c): by hour, then by resource id in byte order.
 */
#ifndef HOUR_ORDER_H
#define HOUR_ORDER_H

#include "datatype/timestamp.h"

extern int *HourIdOrder(int n, const TimestampTz *hours, const char *const *ids);

#endif							/* HOUR_ORDER_H */
