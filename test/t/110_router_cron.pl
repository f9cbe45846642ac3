
# Each shard's own pg_cron runs its own periodic work: two shards behind a router, each with
# pg_cron preloaded and credits.schedule_jobs() called, bill the hours of the projects that
# live on them, and the router shows the deducted hours.  (pg_cron fires at minute granularity
# and the hourly job only on the hour, so an extra every-minute job runs the deductions.)
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use CreditsRouter;

my @shards = map { CreditsRouter::start_shard("shard$_", <<'CONF') } 0 .. 1;
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 20
CONF
my $router = CreditsRouter::start_router('router', 16, @shards);
sub set_clock { $_->safe_psql('postgres', "ALTER DATABASE postgres SET credits.clock = '$_[0]'") for @shards; }

# One project on each shard, each with an instance at 2.00/h since 09:00.
my %by_shard;
for my $p (1 .. 20) { $by_shard{ CreditsRouter::partition_of($router, $p) % 2 } //= $p; }
my @projects = @by_shard{ 0, 1 };
set_clock('2026-07-01 08:00+00');
$router->safe_psql('postgres', join("\n", map { <<SQL } @projects));
SELECT credits.open_account($_);
SELECT credits.add_payment_method($_, 'pm_$_');
SELECT credits.complete_deposit($_, credits.add_credits($_, '100.00'));
SQL
set_clock('2026-07-01 09:00+00');
$router->safe_psql('postgres', join("\n", map { "SELECT credits.start_instance($_, 'gpu-1', '2.00');" } @projects));
set_clock('2026-07-01 12:00:30+00');

for my $shard (@shards)
{
	$shard->safe_psql('postgres', <<'SQL');
CREATE EXTENSION pg_cron;
SELECT credits.schedule_jobs();
SELECT cron.schedule('test-deductions-every-minute', '* * * * *', 'SELECT credits.run_hourly_deductions()');
SQL
}

# Wait (at most 150 s) until the deduction job has succeeded on both shards.
my $deadline = time() + 150;
my @ran;
while (time() < $deadline)
{
	@ran = map {
		$_->safe_psql('postgres', q{
		  SELECT count(*) FROM cron.job_run_details d JOIN cron.job j USING (jobid)
		   WHERE d.status = 'succeeded' AND j.jobname = 'test-deductions-every-minute'})
	} @shards;
	last unless grep { $_ eq '0' } @ran;
	usleep(500_000);
}
ok(!(grep { $_ eq '0' } @ran), "each shard's pg_cron ran the deductions (@ran)");
for my $shard (@shards)
{
	$shard->safe_psql('postgres', "SELECT credits.unschedule_jobs(), cron.unschedule('test-deductions-every-minute')");
	$shard->safe_psql('postgres', 'SELECT credits._lock_periodic_runs()');
}

for my $p (@projects)
{
	is( $router->safe_psql('postgres', qq{
		  SELECT string_agg(to_char(date, 'HH24') || ' ' || amount || ' ' || status, ',' ORDER BY date)
		    FROM credits.transaction_history($p) WHERE type = 'usage' AND status = 'completed'}),
		'09 -2.00 completed,10 -2.00 completed,11 -2.00 completed',
		"project $p: its shard's job deducted hours 9 to 11 once, as the router shows");
	is($router->safe_psql('postgres', "SELECT current_balance FROM credits.balance_overview($p)"),
		'94.00', "project $p: and took them from its balance");
}
is($router->safe_psql('postgres', 'SELECT count(*) FROM credits.verify()'), '0', 'verify() is clean on every shard');

$_->stop for ($router, @shards);
done_testing();
