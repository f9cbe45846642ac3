#!/usr/bin/python3
"""Drives the credits API from psycopg 3 the way application code does: amounts are Python
Decimals, sent with server-side binding (so they arrive as numeric and numeric[]), and credits
read back as Decimal through a loader.  Prints one line per check and exits non-zero on the
first failure.  Usage: psycopg_amounts.py CONNINFO
"""
import sys
from decimal import Decimal

import psycopg
from psycopg.types import TypeInfo
from psycopg.types.numeric import NumericLoader


def check(name, got, want):
    """Prints the check; raises when got differs from want."""
    if got != want:
        raise SystemExit(f"FAIL {name}: got {got!r}, want {want!r}")
    print(f"ok {name}")


def ledger(cur, project):
    """The project's balance and its number of transactions."""
    cur.execute("SELECT balance, (SELECT count(*) FROM credits.transactions WHERE project_id = %s) "
                "FROM credits.accounts WHERE project_id = %s", (project, project))
    return cur.fetchone()


def main(conninfo):
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # credits values come back as Decimal: the text form is a plain decimal number
        info = TypeInfo.fetch(conn, "credits.credits")
        conn.adapters.register_loader(info.oid, NumericLoader)
        cur = conn.cursor()
        cur.execute("SET search_path = \"$user\", public, credits")   # as README advises
        cur.execute("SET credits.clock = '2026-05-01 10:00+00'")
        project = 7001
        cur.execute("SELECT credits.open_account(%s)", (project,))
        cur.execute("SELECT credits.add_payment_method(%s, %s, %s)", (project, "pm_card", "Visa 4242"))

        cur.execute("SELECT credits.add_credits(%s, %s)", (project, Decimal("50.00")))
        deposit = cur.fetchone()[0]
        cur.execute("SELECT credits.complete_deposit(%s, %s, %s)",
                    (project, deposit, "https://invoices.example/1"))
        balance = cur.fetchone()[0]
        check("complete_deposit returns the new balance as Decimal", (type(balance), balance),
              (Decimal, Decimal("50.00")))

        cur.execute("SELECT credits.start_instance(%s, %s, %s)", (project, "gpu-1", Decimal("2.40")))
        cur.execute("SELECT credits.record_usage(%s, %s, %s)", (project, "api:chat", Decimal("0.004405")))
        cur.execute("SELECT credits.record_usage(%s, %s, %s, %s)",
                    (project, "api:chat", Decimal("0.25"), "req-1"))
        cur.execute("SELECT credits.record_usage_batch(%s, %s, %s)",
                    ([project, project], ["api:chat", "api:embed"], [Decimal("0.01"), Decimal("0.020001")]))
        check("record_usage_batch takes a list of Decimals", cur.fetchone()[0], 2)

        # an amount with more than six decimals is refused, not rounded, and writes nothing
        before = ledger(cur, project)
        for sql, args in [("SELECT credits.add_credits(%s, %s)", (project, Decimal("10.0000001"))),
                          ("SELECT credits.record_usage(%s, %s, %s)", (project, "api:chat", Decimal("0.0000001"))),
                          ("SELECT credits.record_usage_batch(%s, %s, %s)",
                           ([project], ["api:chat"], [Decimal("0.1234567")]))]:
            try:
                cur.execute(sql, args)
                raise SystemExit(f"FAIL {sql} with {args} was taken")
            except psycopg.errors.InvalidParameterValue as e:
                check(f"refused with 22023: {sql.split('(')[0][7:]}", e.sqlstate, "22023")
        check("the refusals wrote nothing", ledger(cur, project), before)

        # what was recorded, read back exactly
        cur.execute("SELECT sum(amount) FROM credits.usage_events WHERE project_id = %s", (project,))
        check("recorded usage adds up exactly", cur.fetchone()[0], Decimal("0.284406"))
        cur.execute("SELECT current_balance, burn_rate FROM credits.balance_overview WHERE project_id = %s",
                    (project,))
        check("balance_overview reads as Decimal", cur.fetchone(), (Decimal("50.00"), Decimal("2.40")))
        cur.execute("SELECT credits.configure_auto_recharge(%s, true, %s, %s)",
                    (project, Decimal("10"), Decimal("25.00")))
        cur.execute("SELECT threshold, amount FROM credits.auto_recharge WHERE project_id = %s", (project,))
        check("configure_auto_recharge takes Decimals", cur.fetchone(), (Decimal("10.00"), Decimal("25.00")))
        cur.execute("SELECT count(*) FROM credits.verify()")
        check("verify() is clean", cur.fetchone()[0], 0)
    print("all psycopg checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
