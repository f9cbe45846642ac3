
# pg_cron really runs the credits jobs: a server with pg_cron preloaded (background workers),
# credits and pg_cron installed, credits.schedule_jobs() called.  pg_cron fires at minute
# granularity and the hourly job only on the hour, so besides the two scheduled jobs an extra
# every-minute job runs run_hourly_deductions.  The jobs' sessions get a fixed billing time
# from ALTER DATABASE ... SET credits.clock, at which usage hours have ended (deducted by the
# extra job) and one project's accrued usage has used up its balance (cut off by the
# scheduled minute job, credits-balance-checks).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->append_conf('postgresql.conf', <<'CONF');
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 20
timezone = 'UTC'
lc_messages = 'C'
fsync = off
CONF
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION credits');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');

# The billing time every new session of this database (the cron jobs' too) will see.
my $clock = '2026-07-01 12:00:30+00';
$node->safe_psql('postgres', "ALTER DATABASE postgres SET credits.clock = '$clock'");

# Project 1: an instance since 09:00 at 2.00/h and API usage at 10:15: hours 9, 10 and 11 have
# ended (2.00 + 2.25 + 2.00).  Project 2: 600.00/h since 12:00:00 has used up its 5.00 by
# 12:00:30 (nothing of it is in an ended hour).
$node->safe_psql('postgres', <<'SQL');
SET client_min_messages = warning;
SET credits.clock = '2026-07-01 08:00+00';
SELECT credits.open_account(p), credits.add_payment_method(p, 'pm_' || p) FROM generate_series(1, 2) AS p;
SELECT credits.complete_deposit(1, credits.add_credits(1, '100.00'));
SELECT credits.complete_deposit(2, credits.add_credits(2, '5.00'));
SET credits.clock = '2026-07-01 09:00+00';
SELECT credits.start_instance(1, 'gpu-1', '2.00');
SET credits.clock = '2026-07-01 10:15+00';
SELECT credits.record_usage(1, 'api:chat', '0.25');
SET credits.clock = '2026-07-01 12:00+00';
SELECT credits.start_instance(2, 'gpu-1', '600.00'), credits.attach_volume(2, 'vol-1', '0.10');
SQL

is($node->safe_psql('postgres', 'SELECT credits.now()'), '2026-07-01 12:00:30+00',
	'new sessions see the billing clock set for the database');
is($node->safe_psql('postgres', "SELECT count(*) FROM cron.job"), '0',
	'installing credits scheduled nothing');

$node->safe_psql('postgres', 'SELECT credits.schedule_jobs()');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(jobname || ' ' || schedule || ' ' || command, E'\\n' ORDER BY jobname) FROM cron.job"),
	"credits-balance-checks * * * * * SELECT credits.run_balance_checks()\n"
	  . "credits-hourly-deductions 0 * * * * SELECT credits.run_hourly_deductions()\n"
	  . "credits-usage-summaries 20 * * * * SELECT credits.run_usage_summaries()",
	'schedule_jobs registered the three jobs with schema-qualified commands');
$node->safe_psql('postgres',
	"SELECT cron.schedule('test-deductions-every-minute', '* * * * *', 'SELECT credits.run_hourly_deductions()')"
);
$node->safe_psql('postgres',
	"SELECT cron.schedule('test-summaries-every-minute', '* * * * *', 'SELECT credits.run_usage_summaries()')");

# Wait (at most 150 s) until the every-minute jobs have run and succeeded.
my $deadline = time() + 150;
my $ran = '';
while (time() < $deadline)
{
	$ran = $node->safe_psql(
		'postgres', q{
		SELECT string_agg(DISTINCT j.jobname, ',' ORDER BY j.jobname)
		  FROM cron.job_run_details d JOIN cron.job j USING (jobid)
		 WHERE d.status = 'succeeded'
		   AND j.jobname IN ('credits-balance-checks', 'test-deductions-every-minute',
		                     'test-summaries-every-minute')});
	last if $ran eq 'credits-balance-checks,test-deductions-every-minute,test-summaries-every-minute';
	usleep(500_000);
}
is($ran, 'credits-balance-checks,test-deductions-every-minute,test-summaries-every-minute',
	'pg_cron ran the balance checks, the deductions and the usage summaries');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM cron.job_run_details WHERE status NOT IN ('succeeded', 'running', 'starting')"),
	'0',
	'no job run failed');
note $node->safe_psql('postgres',
	'SELECT string_agg(jobid || \' \' || status || \' \' || coalesce(return_message, \'\'), E\'\n\') FROM cron.job_run_details');

# Stop the jobs before reading the results, so that nothing changes under the checks.
$node->safe_psql('postgres',
	"SELECT credits.unschedule_jobs(), cron.unschedule('test-deductions-every-minute'), "
	  . "cron.unschedule('test-summaries-every-minute')");
is($node->safe_psql('postgres', 'SELECT count(*) FROM cron.job'), '0', 'unschedule_jobs removed the jobs');
# (a run already started finishes; the periodic-run lock waits for it)
$node->safe_psql('postgres', 'SELECT credits._lock_periodic_runs()');

# The deduction job did its work: hours 9-11 of project 1 completed, each once.
is( $node->safe_psql(
		'postgres', q{
		SELECT string_agg(to_char(usage_hour, 'HH24') || ' ' || resource_id || ' ' || amount || ' ' || status,
		                  E'\n' ORDER BY usage_hour, resource_id)
		  FROM credits.transactions WHERE project_id = 1 AND type = 'usage'}),
	"09 gpu-1 -2.00 completed\n10 api:chat -0.25 completed\n10 gpu-1 -2.00 completed\n11 gpu-1 -2.00 completed",
	'the deduction job completed every ended hour once');
is($node->safe_psql('postgres', 'SELECT balance FROM credits.accounts WHERE project_id = 1'),
	'93.75', 'and took it from the balance');

# The balance-check job did its work: project 2 is cut off, its events queued once.
is( $node->safe_psql(
		'postgres', q{
		SELECT a.depleted || ' ' || a.balance || ' '
		       || (SELECT string_agg(r.resource_id || '=' || r.state, ',' ORDER BY r.resource_id)
		             FROM credits.resources r WHERE r.project_id = 2)
		  FROM credits.accounts a WHERE a.project_id = 2}),
	'true 5.00 gpu-1=terminated,vol-1=inaccessible',
	'the balance-check job cut off the project whose usage used up its balance');
is( $node->safe_psql(
		'postgres', q{
		SELECT string_agg(kind, ',' ORDER BY event_id) FROM credits.events
		 WHERE project_id = 2 AND kind <> 'charge_requested'}),
	'instance_terminated,volume_inaccessible,balance_depleted',
	'with its events, once');
is($node->safe_psql('postgres', 'SELECT count(*) FROM credits.verify()'), '0', 'verify() is clean');

$node->stop;
done_testing();
