
# A server crash in the middle of run_hourly_deductions loses nothing and charges nothing
# twice.  1,000 projects with 3 instances and a volume each, running 07:00-12:00 (20,000
# resource-hours), plus API usage in two hours (2,000 more usage hours).  The deduction at
# 12:00:05 is killed twice with kill -9 of the postmaster:
#   1. while it waits, writing its new hours, for another session's uncommitted row of one of
#      those hours (a usage row inserted by hand with the same key: so certainly mid-run,
#      events folded, hours being written, nothing committed; the periodic runs pass a locked
#      account over rather than wait for it);
#   2. a moment after it started (wherever it is then).
# After each restart the ledger is as before the run (or, had the run committed before the
# kill, completely deducted: a run is all or nothing).  Then the run is repeated: every
# (resource, hour) is charged exactly once, every balance is what the rates say, verify() is
# clean, and running again changes nothing.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf', <<'CONF');
timezone = 'UTC'
lc_messages = 'C'
CONF
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE billing');
$node->safe_psql('billing', 'CREATE EXTENSION credits');

my $projects = 1000;
$node->safe_psql('billing', <<SQL);
SET client_min_messages = warning;
SET search_path = public, credits;
SET credits.clock = '2026-08-01 06:00+00';
SELECT count(*) FROM (SELECT open_account(p), add_payment_method(p, 'pm_' || p)
                        FROM generate_series(1, $projects) AS p) AS x;
SELECT count(*) FROM (SELECT complete_deposit(p, add_credits(p, '1000.00'))
                        FROM generate_series(1, $projects) AS p) AS x;
SET credits.clock = '2026-08-01 07:00+00';
SELECT count(*) FROM (SELECT start_instance(p, 'gpu-' || k, ((p % 5) + k) * '0.37'::credits)
                        FROM generate_series(1, $projects) AS p, generate_series(1, 3) AS k) AS x;
SELECT count(*) FROM (SELECT attach_volume(p, 'vol-1', '0.05') FROM generate_series(1, $projects) AS p) AS x;
SET credits.clock = '2026-08-01 08:30+00';
SELECT record_usage_batch(array_agg(p::bigint), array_agg('api:chat'::text), array_agg((p % 100 + 1) * '0.001'::credits))
  FROM generate_series(1, $projects) AS p;
SET credits.clock = '2026-08-01 10:30+00';
SELECT record_usage_batch(array_agg(p::bigint), array_agg('api:embed'::text), array_agg('0.02'::credits))
  FROM generate_series(1, $projects) AS p;
SQL

# What the ledger looks like: usage rows by status, events waiting to be folded, the billing
# clocks, and the sum of the balances.
my $state_sql = q{
	SELECT format('completed=%s accumulating=%s unfolded=%s clocks=%s balances=%s',
		(SELECT count(*) FROM credits.transactions WHERE type = 'usage' AND status = 'completed'),
		(SELECT count(*) FROM credits.transactions WHERE type = 'usage' AND status = 'accumulating'),
		(SELECT count(*) FROM credits.usage_events),
		(SELECT string_agg(DISTINCT accrued_until::text, ',') FROM credits.resources),
		(SELECT sum(balance::numeric) FROM credits.accounts))};
my $before = $node->safe_psql('billing', $state_sql);
is($before,
	'completed=0 accumulating=0 unfolded=2000 clocks=2026-08-01 07:00:00+00 balances=1000000.00',
	'before the run: nothing deducted, API usage waiting to be folded');

my $run_sql = "SET credits.clock = '2026-08-01 12:00:05+00';\nSELECT credits.run_hourly_deductions();\n";

# Starts the deduction in a background psql and waits until pg_stat_activity shows it running
# (and, with $waiting, waiting for a lock).  Returns the session.
sub start_run
{
	my ($waiting) = @_;
	my $session = $node->background_psql('billing', on_error_stop => 0);
	$session->query_until(qr/started/, "\\echo started\n$run_sql");
	my $condition =
	  "SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE '%run_hourly_deductions%' "
	  . "AND pid <> pg_backend_pid() AND state = 'active'"
	  . ($waiting ? " AND wait_event_type = 'Lock'" : '');
	$node->poll_query_until('billing', $condition)
	  or die 'the deduction run did not show up in pg_stat_activity';
	return $session;
}

# A crash: kill -9 of the postmaster and, as a machine crash or the OOM killer would, of every
# server process (a backend left running the deduction would keep the shared memory
# attached and the restart would refuse to start).  Then reap the psql sessions and restart:
# the server recovers from its WAL.
sub crash_and_restart
{
	my @sessions = @_;
	my @pids = split /\n/, $node->safe_psql('billing', 'SELECT pid FROM pg_stat_activity');
	push @pids, $node->{_pid};
	$node->kill9;
	kill 'KILL', @pids;
	foreach my $s (@sessions)
	{
		eval { $s->{run}->kill_kill; };
	}
	# wait until they are all gone (the postmaster's lock file names a pid that must be dead)
	my $deadline = time() + 30;
	usleep(100_000) while (kill(0, @pids) > 0 && time() < $deadline);
	$node->start;
}

# ---- Crash 1: while the run waits, writing hour 11 of the last project's gpu-1, for an
# uncommitted row with the same key.
my $holder = $node->background_psql('billing');
$holder->query_safe(
	"BEGIN; INSERT INTO credits.transactions (project_id, type, status, amount, created_at, description,
	                                          resource_id, usage_hour, accrued_units)
	        VALUES ($projects, 'usage', 'accumulating', '0', '2026-08-01 11:00+00', 'x', 'gpu-1',
	                '2026-08-01 11:00+00', 0);");
my $run = start_run(1);
is( $node->safe_psql(
		'billing',
		"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"),
	'1',
	'the run holds the periodic-run lock and is blocked mid-run');
crash_and_restart($run, $holder);
is($node->safe_psql('billing', $state_sql), $before,
	'after crash 1 the ledger is exactly as before the run');
is($node->safe_psql('billing', 'SELECT count(*) FROM credits.verify()'), '0', 'verify() is clean');

# ---- Crash 2: a moment after the run started, wherever it is.
$run = start_run(0);
usleep(300_000);
my $was_running = $node->safe_psql('billing',
	"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%run_hourly_deductions%' AND pid <> pg_backend_pid()"
);
note "run still active at the kill: $was_running";
crash_and_restart($run);
my $after2 = $node->safe_psql('billing', $state_sql);
ok( $after2 eq $before || $after2 =~ /^completed=22000 accumulating=0 unfolded=0 /,
	"after crash 2 the run is all or nothing ($after2)");
is($node->safe_psql('billing', 'SELECT count(*) FROM credits.verify()'), '0', 'verify() is clean');

# ---- The run again, to completion; then once more.
my $completed = $node->safe_psql('billing', $run_sql);
ok($completed == 22000 || ($completed == 0 && $after2 ne $before),
	"the run after the crashes completed the usage hours ($completed)");
is($node->safe_psql('billing', $run_sql), '0', 'running again completes nothing');

is( $node->safe_psql(
		'billing', q{
		SELECT count(*) FILTER (WHERE status = 'completed') || ' ' || count(*)
		       || ' ' || count(DISTINCT (project_id, resource_id, usage_hour))
		  FROM credits.transactions WHERE type = 'usage'}),
	'22000 22000 22000',
	'22,000 usage transactions, all completed, one per (project, resource, hour)');
is( $node->safe_psql(
		'billing', q{
		SELECT count(*) FROM (
		    SELECT r.project_id, r.resource_id, count(t.*) AS hours,
		           min(t.usage_hour) AS first, max(t.usage_hour) AS last
		      FROM credits.resources r
		      LEFT JOIN credits.transactions t USING (project_id, resource_id)
		     GROUP BY r.project_id, r.resource_id) AS x
		 WHERE hours <> 5 OR first <> '2026-08-01 07:00+00' OR last <> '2026-08-01 11:00+00'}),
	'0',
	'every resource is charged for hours 7, 8, 9, 10 and 11, each once');
is( $node->safe_psql(
		'billing', q{
		SELECT count(*) FROM credits.transactions t JOIN credits.resources r USING (project_id, resource_id)
		 WHERE t.amount::numeric <> -r.rate_per_hour::numeric}),
	'0',
	'each resource-hour is charged its full rate');
is( $node->safe_psql(
		'billing', q{
		SELECT count(*) FROM credits.accounts a
		 WHERE a.balance::numeric <> 1000.00
		       - 5 * (SELECT sum(r.rate_per_hour::numeric) FROM credits.resources r WHERE r.project_id = a.project_id)
		       - (a.project_id % 100 + 1) * 0.001 - 0.02}),
	'0',
	'every balance is 1000.00 minus five hours of its rates and its API usage');
is( $node->safe_psql(
		'billing', q{
		SELECT count(*) FROM credits.transactions WHERE type = 'usage' AND uncollected::numeric <> 0}),
	'0', 'nothing uncollected');
is($node->safe_psql('billing', 'SELECT count(*) FROM credits.verify()'), '0', 'verify() is clean');

$node->stop;
done_testing();
