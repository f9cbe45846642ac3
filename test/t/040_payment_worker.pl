
# The reference payment worker (test/worker/payment_worker.pl) against a real server, run as
# subprocesses connected as a login role in credits_worker, with the fake provider:
#   approved deposits complete with their invoice URL, declined ones fail, other events are
#   acked; a provider timeout leaves the event to be handed out again after the lease
#   (credits.event_lease = 2s here) and the retry completes it without charging twice; two
#   workers on 200 deposits complete each exactly once; a worker killed with SIGKILL mid-run
#   loses nothing and a second one finishes without charging or completing anything twice;
#   auto-recharge end to end, approved and declined; refunds end to end, approved (completed,
#   the lot and balance down) and declined (failed, the hold released).  verify() is clean at
#   the end.
use strict;
use warnings;

use FindBin;
use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;
use CreditsNode;
use Time::HiRes ();

use lib "$FindBin::RealBin/../worker";
use FakeProvider;

my $worker = "$FindBin::RealBin/../worker/payment_worker.pl";

my $node = CreditsNode::start_node('payment_worker', "synchronous_commit = off\n");
$node->safe_psql('postgres', <<'SQL');
CREATE ROLE payment_worker LOGIN IN ROLE credits_worker;
ALTER DATABASE postgres SET credits.event_lease = '2s';
SQL

my $dsn = sprintf('dbi:Pg:dbname=postgres;host=%s;port=%d;user=payment_worker', $node->host, $node->port);
my $nworkers = 0;

# Runs SQL as the superuser, with credits on the search_path, and returns its output.
sub sql { return $node->safe_psql('postgres', "SET search_path = public, credits;\n$_[0]"); }

# Runs a worker with --once to the end; returns its output.
sub worker_once
{
	my (@opts) = @_;
	my $log = sprintf('%s/worker_%02d.log', $PostgreSQL::Test::Utils::log_path, ++$nworkers);
	my ($out, $err) = ('', '');
	IPC::Run::run([ $^X, $worker, '--dsn', $dsn, '--once', @opts ], '>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default))
	  or die "worker failed ($?): $err";
	open(my $fh, '>', $log) or die;
	print $fh $out, $err;
	close $fh;
	return $out;
}

# Starts a long-running worker (output to its log file); returns [harness, log file].
sub worker_start
{
	my (@opts) = @_;
	my $log = sprintf('%s/worker_%02d.log', $PostgreSQL::Test::Utils::log_path, ++$nworkers);
	my $h = IPC::Run::start([ $^X, $worker, '--dsn', $dsn, '--poll', '0.2', @opts ],
		'>', $log, '2>&1');
	return [ $h, $log ];
}

# Stops a worker started with worker_start (SIGTERM, or SIGKILL); returns its output.
sub worker_stop
{
	my ($w, $signal) = @_;
	my ($h, $log) = @$w;
	eval { $h->signal($signal) } if $signal;    # (none: wait for a --once worker to end)
	eval { $h->finish };
	return slurp_file($log);
}

# Waits until the query returns t; fails the test on timeout.
sub wait_for
{
	my ($query, $what) = @_;
	ok($node->poll_query_until('postgres', $query), $what) or BAIL_OUT("timed out: $what");
}

# Opens projects first..last with a default method (provider_ref pm_<project>, or given).
sub open_projects
{
	my ($first, $last, $ref) = @_;
	$ref //= q{'pm_' || p};
	sql("SELECT credits.open_account(p), credits.add_payment_method(p, $ref)
	       FROM generate_series($first, $last) AS p");
}

# The deposits of projects first..last by status, as "status=count ...".
sub statuses
{
	my ($first, $last) = @_;
	return sql("SELECT string_agg(status || '=' || n, ' ' ORDER BY status) FROM (
	              SELECT status, count(*) AS n FROM credits.transactions
	               WHERE project_id BETWEEN $first AND $last AND type <> 'usage' GROUP BY status) s");
}

# Projects first..last whose balance differs from the sum of their completed deposits.
sub wrong_balances
{
	my ($first, $last) = @_;
	return sql("SELECT count(*) FROM credits.accounts a
	             WHERE a.project_id BETWEEN $first AND $last
	               AND a.balance <> (SELECT coalesce(credits.sum(t.amount), '0') FROM credits.transactions t
	                                  WHERE t.project_id = a.project_id AND t.type <> 'usage'
	                                    AND t.status = 'completed')");
}

# The unacknowledged events of projects first..last.
sub unacked
{
	my ($first, $last) = @_;
	return sql("SELECT count(*) FROM credits.events
	             WHERE project_id BETWEEN $first AND $last AND acked_at IS NULL");
}

# ---------------------------------------------------------------------------------------------
# Approved, declined, and the other kinds of events (provider mode rules).
my $store = PostgreSQL::Test::Utils::tempdir('provider');
open_projects(1, 4);
open_projects(5, 5, q{'pm_decline_' || p});
my $tx_ok   = sql("SELECT credits.add_credits(1, '10.00')");
my $tx_13   = sql("SELECT credits.add_credits(2, '10.13')");
my $tx_ref  = sql("SELECT credits.add_credits(5, '20.00')");
# Project 3: completed by someone else before the worker sees its event.
my $tx_done = sql("SELECT credits.add_credits(3, '7.00')");
sql("SELECT credits.complete_deposit(3, $tx_done, 'https://invoices.example/manual')");
# Project 4: cut off (instance_terminated, balance_depleted) after its deposit is done.
my $tx_4 = sql("SELECT credits.add_credits(4, '5.00')");
sql("SELECT credits.complete_deposit(4, $tx_4)");
sql("SELECT credits.start_instance(4, 'gpu-4', '1.00')");
sql("SELECT credits.record_usage(4, 'api:chat', '6.00')");
sql("SELECT credits.run_balance_checks()");

my $out = worker_once('--provider-store', $store);
like($out, qr/tx $tx_ok on pm_1: approved, completed \(https:\/\/invoices.example\/inv_$tx_ok\)/, 'approved deposit logged');
like($out, qr/instance_terminated project 4 resource gpu-4: acked/, 'other events are logged and acked');
is(sql("SELECT status || ' ' || coalesce(invoice_url, '-') || ' ' || coalesce(failure_reason, '-')
          FROM credits.transactions WHERE transaction_id IN ($tx_ok, $tx_13, $tx_ref, $tx_done)
         ORDER BY transaction_id"),
	join("\n", "completed https://invoices.example/inv_$tx_ok -", "failed - card_declined",
		"failed - do_not_honor", "completed https://invoices.example/manual -"),
	'approved: completed with its invoice URL; amount .13 and a declining card: failed with the reason');
is(sql("SELECT string_agg(project_id || ':' || balance, ' ' ORDER BY project_id) FROM credits.accounts
         WHERE project_id BETWEEN 1 AND 5"), '1:10.00 2:0.00 3:7.00 4:5.00 5:0.00', 'balances');
is(unacked(1, 5), '0', 'every event acked, also the one whose deposit was completed before');
like($out, qr/charge for tx $tx_done of project 3 is completed: acked, not charged/,
	'a deposit completed meanwhile is not charged; its event is acked');
ok(!exists FakeProvider->new(store => $store)->charges->{"credits-3-$tx_done"}, 'no charge for it');
is(sql("SELECT string_agg(DISTINCT kind, ',' ORDER BY kind) FROM credits.events WHERE project_id = 4"),
	'balance_depleted,charge_requested,instance_terminated', 'project 4 had other events');

# Completed by someone else while the provider was charging: complete_deposit says it is no
# longer pending (55000); the worker takes it as done and acks.
open_projects(6, 6);
my $tx_race = sql("SELECT credits.add_credits(6, '9.00')");
my $slow = worker_start('--provider-store', $store, '--provider-delay-ms', '1500', '--once');
wait_for("SELECT claims = 1 FROM credits.events WHERE transaction_id = $tx_race", 'race: the worker claimed the event');
sql("SELECT credits.complete_deposit(6, $tx_race, 'https://invoices.example/operator')");
$out = worker_stop($slow);
like($out, qr/tx $tx_race on pm_6: approved, no longer pending, acked/, 'race: 55000 taken as done, event acked');
is(sql("SELECT status || ' ' || invoice_url || ' ' || balance FROM credits.transactions JOIN credits.accounts USING (project_id)
         WHERE transaction_id = $tx_race"), 'completed https://invoices.example/operator 9.00', 'race: completed once');
is(unacked(6, 6), '0', 'race: acked');

# ---------------------------------------------------------------------------------------------
# Provider timeout: the charge is made but its answer is lost; the event stays leased, comes
# back after the lease, and the retry (same idempotency key) completes it, charged once.
# (a longer lease here, so that the second worker surely starts within it)
sql("ALTER DATABASE postgres SET credits.event_lease = '5s'");
open_projects(10, 10);
my $tx_to = sql("SELECT credits.add_credits(10, '10.14')");
$out = worker_once('--provider-store', $store);
like($out, qr/tx $tx_to on pm_10: provider timed out; left for re-delivery/, 'timeout logged');
is(sql("SELECT status FROM credits.transactions WHERE transaction_id = $tx_to"), 'pending', 'still pending after the timeout');
$out = worker_once('--provider-store', $store);
unlike($out, qr/tx $tx_to /, 'not handed out again while leased');
Time::HiRes::sleep(5.5);
sql("ALTER DATABASE postgres SET credits.event_lease = '2s'");
$out = worker_once('--provider-store', $store);
like($out, qr/tx $tx_to on pm_10 \(delivery 2\), provider replayed the first answer: approved, completed/,
	'handed out again after the lease and completed');
is(sql("SELECT status || ' ' || invoice_url FROM credits.transactions WHERE transaction_id = $tx_to"),
	"completed https://invoices.example/inv_$tx_to", 'completed with its invoice URL');
my $provider = FakeProvider->new(store => $store);
is(scalar(grep { $_ eq "credits-10-$tx_to" } keys %{ $provider->charges }), 1, 'charged once');
my @attempts = grep { / credits-10-$tx_to / } do { open(my $fh, '<', "$store/attempts.log") or die; <$fh> };
is(scalar(@attempts), 2, 'two attempts with the same idempotency key');
is(unacked(10, 10), '0', 'acked');

# ---------------------------------------------------------------------------------------------
# Two workers at once on 200 deposits (20 projects, 10 deposits each).
my $store2 = PostgreSQL::Test::Utils::tempdir('provider2');
open_projects(100, 119);
my @two = map { worker_start('--provider-store', $store2, '--provider-mode', 'approve', '--batch', '5',
		'--provider-delay-ms', '5') } 1 .. 2;
sql(q{SELECT credits.add_credits(100 + i % 20, (5 + i % 7 || '.' || lpad((i % 100)::text, 2, '0'))::credits.credits)
        FROM generate_series(1, 200) AS i});
wait_for(q{SELECT count(*) = 200 FROM credits.transactions
            WHERE project_id BETWEEN 100 AND 119 AND status = 'completed'}, 'two workers: 200 deposits completed');
my @handled = map { worker_stop($_, 'TERM') =~ /exiting: (\d+) events handled: (\d+) completed/ ? $2 : -1 } @two;
is(statuses(100, 119), 'completed=200', 'two workers: every deposit completed, none pending or failed');
is($handled[0] + $handled[1], 200, "two workers: completed 200 between them ($handled[0] + $handled[1])");
ok($handled[0] > 0 && $handled[1] > 0, 'two workers: both took part');
is(wrong_balances(100, 119), '0', 'two workers: balances exact');
is(sql("SELECT credits.sum(balance) FROM credits.accounts WHERE project_id BETWEEN 100 AND 119"),
	sql(q{SELECT credits.sum((5 + i % 7 || '.' || lpad((i % 100)::text, 2, '0'))::credits.credits) FROM generate_series(1, 200) AS i}),
	'two workers: total balance is the total deposited');
is(scalar(keys %{ FakeProvider->new(store => $store2)->charges }), 200, 'two workers: 200 charges, one per deposit');
is(unacked(100, 119), '0', 'two workers: every event acked');

# ---------------------------------------------------------------------------------------------
# kill -9 a worker mid-run, start another: nothing charged or completed twice, nothing lost.
my $store3 = PostgreSQL::Test::Utils::tempdir('provider3');
open_projects(200, 219);
sql(q{SELECT credits.add_credits(200 + i % 20, '10.00') FROM generate_series(1, 200) AS i});
# (the provider answers after 20 ms, the charge made; once 10 deposits are completed the
# provider holds its answers back, and the worker is killed while it waits for one)
my $victim = worker_start('--provider-store', $store3, '--provider-mode', 'approve', '--batch', '10',
	'--provider-delay-ms', '20');
my $completed_sql = q{SELECT count(*) FROM credits.transactions
                       WHERE project_id BETWEEN 200 AND 219 AND status = 'completed'};
wait_for("SELECT ($completed_sql) >= 10", 'kill: the first worker is under way');
open(my $hold, '>', "$store3/hold") or die;
close $hold;
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
until (keys %{ FakeProvider->new(store => $store3)->charges } > sql($completed_sql))
{
	BAIL_OUT('kill: the worker never charged') if time > $deadline;
	Time::HiRes::sleep(0.05);
}
worker_stop($victim, 'KILL');
unlink "$store3/hold" or die;
my $left = sql(q{SELECT count(*) FROM credits.events WHERE project_id BETWEEN 200 AND 219
                  AND acked_at IS NULL AND claimed_until IS NOT NULL});
ok($left > 0, "kill: the killed worker left $left claimed events unacknowledged");
my $completed_at_kill = sql($completed_sql);
my $charged_at_kill = keys %{ FakeProvider->new(store => $store3)->charges };
ok($completed_at_kill < 200, "kill: $completed_at_kill of 200 completed when killed");
ok($charged_at_kill > $completed_at_kill,
	"kill: killed after charging and before completing ($charged_at_kill charged, $completed_at_kill completed)");
my $second = worker_start('--provider-store', $store3, '--provider-mode', 'approve', '--batch', '10');
wait_for(q{SELECT count(*) = 200 FROM credits.transactions
            WHERE project_id BETWEEN 200 AND 219 AND status = 'completed'}, 'kill: the second worker finished');
wait_for(q{SELECT count(*) = 0 FROM credits.events WHERE project_id BETWEEN 200 AND 219 AND acked_at IS NULL},
	'kill: every event acked');
$out = worker_stop($second, 'TERM');
is(statuses(200, 219), 'completed=200', 'kill: every deposit completed');
is(sql("SELECT string_agg(project_id || ':' || balance, ' ' ORDER BY project_id) FROM credits.accounts
         WHERE project_id BETWEEN 200 AND 219 AND balance <> '100.00'"), '', 'kill: each project holds exactly 100.00');
my $charges = FakeProvider->new(store => $store3)->charges;
is(scalar(keys %$charges), 200, 'kill: 200 charges, one per deposit');
my $replays = () = do { open(my $fh, '<', "$store3/attempts.log") or die; grep { / 1$/ } <$fh> };
is($replays, $charged_at_kill - $completed_at_kill,
	'kill: what was charged and not completed was answered from the provider\'s record, not charged again');
unlike($out, qr/no longer pending|acked, not charged/, 'kill: the second worker never found a deposit completed already');

# ---------------------------------------------------------------------------------------------
# Auto-recharge end to end: the threshold is crossed by accrued usage, run_balance_checks
# requests the recharge, the worker charges and completes it: the balance rises.  A declined
# one disarms auto-recharge: the next checks request nothing.
open_projects(300, 300);
open_projects(301, 301, q{'pm_decline_' || p});
sql("SELECT credits.complete_deposit(p, credits.add_credits(p, '20.00')) FROM generate_series(300, 301) AS p");
worker_once('--provider-store', $store);    # (acks the deposits' events: done before)
sql("SELECT credits.configure_auto_recharge(p, true, '10.00', '25.00') FROM generate_series(300, 301) AS p");
sql("SELECT credits.record_usage(p, 'api:batch', '15.00') FROM generate_series(300, 301) AS p");
is(sql("SELECT credits.run_balance_checks() >= 2"), 't', 'auto-recharge: the check requests the recharges');
is(sql("SELECT string_agg(project_id || ' ' || status || ' ' || amount, ', ' ORDER BY project_id)
          FROM credits.transactions WHERE project_id BETWEEN 300 AND 301 AND type = 'auto_recharge'"),
	'300 pending 25.00, 301 pending 25.00', 'auto-recharge: pending');
$out = worker_once('--provider-store', $store);
like($out, qr/charge auto_recharge 25.00 of project 300, tx \d+ on pm_300: approved, completed/, 'auto-recharge: logged');
is(sql("SELECT string_agg(project_id || ' ' || status || ' ' || coalesce(invoice_url ~ '^https://invoices.example/inv_\\d+\$', false)
                          || ' ' || coalesce(failure_reason, '-'), ', ' ORDER BY project_id)
          FROM credits.transactions WHERE project_id BETWEEN 300 AND 301 AND type = 'auto_recharge'"),
	'300 completed true -, 301 failed false do_not_honor', 'auto-recharge: approved one completed, declined one failed');
is(sql("SELECT string_agg(project_id || ' ' || current_balance || ' ' || available_balance, ', ' ORDER BY project_id)
          FROM credits.balance_overview WHERE project_id BETWEEN 300 AND 301"),
	'300 45.00 30.00, 301 20.00 5.00', 'auto-recharge: balance raised by the recharge');
sql("SELECT credits.run_balance_checks()");
is(sql("SELECT count(*) FROM credits.transactions WHERE project_id = 301 AND type = 'auto_recharge'"), '1',
	'auto-recharge: declined, disarmed: no new request');
is(sql("SELECT armed FROM credits.auto_recharge WHERE project_id = 301"), 'f', 'auto-recharge: disarmed');
is(unacked(300, 301), '0', 'auto-recharge: events acked');

# ---------------------------------------------------------------------------------------------
# The events of spending controls and volume retention: acked, nothing charged.  Project 7:
# alerts (balance_low), a daily budget that stops its instance (budget_reached,
# instance_stopped); project 8: cut off with a retention of one hour, warned and its volume
# deleted (volume_inaccessible, volume_deletion_warning, volume_deleted).
open_projects(7, 8);
sql(q{
SET credits.clock = '2027-01-01 10:00+00';
SELECT credits.complete_deposit(p, credits.add_credits(p, '6.00')) FROM (VALUES (7), (8)) AS v(p);
SELECT credits.start_instance(7, 'gpu-7', '1.00'), credits.attach_volume(8, 'vol-8', '3.00');
SELECT credits.configure_limits(7, daily_budget => '2.00', on_budget => 'stop');
SELECT credits.configure_alerts(7, below_balance => '5.00');
SET credits.volume_retention = '1 hour';
SET credits.clock = '2027-01-01 12:00+00';
SELECT credits.run_balance_checks();
SET credits.clock = '2027-01-01 13:00+00';
SELECT credits.run_balance_checks();
});
my $deposits_before = sql("SELECT count(*) FROM credits.transactions WHERE type <> 'usage'");
$out = worker_once('--provider-store', $store);
is(sql("SELECT string_agg(DISTINCT kind, ',' ORDER BY kind) FROM credits.events
         WHERE project_id IN (7, 8) AND kind <> 'charge_requested'"),
	'balance_depleted,balance_low,budget_reached,instance_stopped,volume_deleted,volume_deletion_warning,volume_inaccessible',
	'spending and retention events queued');
for my $kind (qw(balance_low budget_reached instance_stopped volume_deletion_warning volume_deleted))
{
	like($out, qr/$kind project [78]\b.*: acked/, "$kind is logged and acked");
}
is(unacked(7, 8), '0', 'every spending and retention event acked');
is(sql("SELECT count(*) FROM credits.transactions WHERE type <> 'usage'"), $deposits_before,
	'they request no charge');
ok(!grep({ /^credits-[78]-/ } keys %{ FakeProvider->new(store => $store)->charges }),
	'nothing charged for projects 7 and 8 (their deposits were completed before)');

# ---------------------------------------------------------------------------------------------
# Refunds: project 400's refund (10.00) is approved, project 401's (10.13, declined by the
# provider's rules) fails and its hold is released.
open_projects(400, 401);
my @dep = map { sql("SELECT credits.add_credits($_, '30.00')") } (400, 401);
worker_once('--provider-store', $store);
my $refund_ok   = sql("SELECT credits.refund_deposit(400, $dep[0], '10.00', 'customer request')");
my $refund_nope = sql("SELECT credits.refund_deposit(401, $dep[1], '10.13')");
is(sql("SELECT string_agg(project_id || ' ' || available_balance, ', ' ORDER BY project_id) FROM credits.balance_overview
         WHERE project_id BETWEEN 400 AND 401"), '400 20.00, 401 19.87', 'refunds: held while pending');
$out = worker_once('--provider-store', $store);
like($out, qr/refund 10.00 of project 400, tx $refund_ok on pm_400 \(deposit $dep[0]\): refunded, completed/,
	'refunds: approved one logged');
like($out, qr/refund 10.13 of project 401, tx $refund_nope on pm_401 \(deposit $dep[1]\): declined \(card_declined\), failed/,
	'refunds: declined one logged');
is(sql("SELECT string_agg(project_id || ' ' || status || ' ' || amount || ' ' || coalesce(failure_reason, '-'), ', '
                          ORDER BY project_id)
          FROM credits.transactions WHERE project_id BETWEEN 400 AND 401 AND type = 'refund'"),
	'400 completed -10.00 -, 401 failed -10.13 card_declined', 'refunds: completed and failed');
is(sql("SELECT string_agg(project_id || ' ' || current_balance || ' ' || available_balance, ', ' ORDER BY project_id)
          FROM credits.balance_overview WHERE project_id BETWEEN 400 AND 401"),
	'400 20.00 20.00, 401 30.00 30.00', 'refunds: the balance down by the completed one, the failed one released');
is(sql("SELECT string_agg(project_id || ' ' || remaining || ' ' || state, ', ' ORDER BY project_id)
          FROM credits.lots WHERE project_id BETWEEN 400 AND 401"),
	'400 20.00 active, 401 30.00 active', 'refunds: the lots');
ok(exists FakeProvider->new(store => $store)->charges->{"credits-refund-400-$refund_ok"}, 'refunds: refunded at the provider once');
$out = worker_once('--provider-store', $store);
is(unacked(400, 401), '0', 'refunds: events acked');

# ---------------------------------------------------------------------------------------------
is(sql("SELECT count(*) FROM credits.events WHERE acked_at IS NULL"), '0', 'no event left unacknowledged');
is(sql("SELECT string_agg(project_id || ': ' || problem, E'\\n') FROM credits.verify()"), '', 'verify() is clean');

$node->stop;
done_testing();
