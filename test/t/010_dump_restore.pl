
# pg_dump -Fc of a database using credits, restored into a fresh database on a fresh server:
# the rows of every table the extension registered with pg_extension_config_dump come back
# (balances, payment methods, deposits in every state, usage, the events outbox, idempotency
# keys, auto-recharge settings), the sequences continue where they were, and the restored
# ledger keeps working (idempotency keys still answer, the pending deposit completes, the
# periodic run deducts, verify() stays clean).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $conf = <<'CONF';
timezone = 'UTC'
lc_messages = 'C'
fsync = off
CONF

my $source = PostgreSQL::Test::Cluster->new('dump_source');
$source->init;
$source->append_conf('postgresql.conf', $conf);
$source->start;
$source->safe_psql('postgres', 'CREATE DATABASE billing');
$source->safe_psql('billing', 'CREATE EXTENSION credits');

# ----------------------------------------------------------------------------------------------
# A ledger with something of everything.
$source->safe_psql('billing', <<'SQL');
SET client_min_messages = warning;
SET credits.clock = '2026-03-08 08:00+00';
SELECT credits.open_account(p) FROM generate_series(1, 4) AS p;
SELECT credits.add_payment_method(1, 'pm_1_visa', 'Visa ending 4242');
SELECT credits.add_payment_method(1, 'pm_1_mc', 'Mastercard', make_default => false);
SELECT credits.add_payment_method(2, 'pm_2');
SELECT credits.add_payment_method(3, 'pm_3');
SELECT credits.remove_payment_method(1, m.method_id)
  FROM credits.payment_methods m WHERE m.provider_ref = 'pm_1_mc';
-- deposits: completed, failed, pending (with and without idempotency keys)
SELECT credits.complete_deposit(1, credits.add_credits(1, '100.00', idempotency_key => 'order-1'),
                                'https://invoices.example/1');
SELECT credits.fail_deposit(1, credits.add_credits(1, '50.00'), 'card_declined');
SELECT credits.add_credits(1, '20.00', idempotency_key => 'order-pending');
SELECT credits.complete_deposit(2, credits.add_credits(2, '10.00'));
SELECT credits.complete_deposit(3, credits.add_credits(3, '30.00'));
-- usage: instances, a volume, API calls
SELECT credits.start_instance(1, 'gpu-1', '3.00');
SELECT credits.attach_volume(1, 'vol-1', '0.10');
SELECT credits.start_instance(2, 'gpu-2', '6.00');
SET credits.clock = '2026-03-08 09:30+00';
SELECT credits.record_usage(1, 'api:chat', '0.25', 'req-1');
SELECT credits.record_usage(1, 'api:chat', '0.50', 'req-2');
SELECT credits.stop_instance(1, 'gpu-1');
-- the hours 08:00 and 09:00 deducted; project 2 runs out (instance terminated, events queued)
SET credits.clock = '2026-03-08 10:00:05+00';
SELECT credits.run_hourly_deductions();
-- auto-recharge requested for project 3
SELECT credits.configure_auto_recharge(3, true, '50.00', '25.00');
SELECT credits.run_balance_checks();
-- API usage folded into the hour's roll-up, more not folded yet, a volume still accruing
SET credits.clock = '2026-03-08 10:05+00';
SELECT credits.record_usage(1, 'api:embed', '0.40');
SELECT credits.run_balance_checks();
SET credits.clock = '2026-03-08 10:10+00';
SELECT credits.record_usage(1, 'api:chat', '0.75', 'req-3');
-- events: some acknowledged, some claimed and leased, the rest waiting
SELECT credits.ack_event(e.event_id) FROM credits.claim_events(3) AS e;
SELECT count(*) FROM credits.claim_events(2);
SQL

# The queries whose answers must be the same before and after; the clock is fixed so that what
# accrues "now" is the same on both sides.
my $clock = "SET credits.clock = '2026-03-08 10:20+00';";
my %snapshot = (
	accounts => 'SELECT * FROM credits.accounts ORDER BY project_id',
	payment_methods => 'SELECT * FROM credits.payment_methods ORDER BY method_id',
	transactions => 'SELECT * FROM credits.transactions ORDER BY transaction_id',
	transaction_history => 'SELECT * FROM credits.transaction_history',
	balance_overview => 'SELECT * FROM credits.balance_overview ORDER BY project_id',
	resource_overview =>
	  'SELECT * FROM credits.resource_overview ORDER BY project_id, resource_id',
	resources => 'SELECT * FROM credits.resources ORDER BY project_id, resource_id',
	events => 'SELECT * FROM credits.events ORDER BY event_id',
	usage_events =>
	  'SELECT * FROM credits.usage_events ORDER BY project_id, resource_id, usage_hour, amount',
	usage_keys => 'SELECT * FROM credits.usage_keys ORDER BY project_id, idempotency_key',
	usage_rollup =>
	  'SELECT * FROM credits.usage_rollup ORDER BY project_id, usage_hour, resource_id',
	auto_recharge => 'SELECT * FROM credits.auto_recharge ORDER BY project_id',
	sequences => "SELECT sequencename, last_value FROM pg_sequences
	               WHERE schemaname = 'credits' ORDER BY 1",);

sub snapshot
{
	my ($node, $db) = @_;
	my %out;
	$out{$_} = $node->safe_psql($db, "$clock $snapshot{$_}") for keys %snapshot;
	return \%out;
}

my $before = snapshot($source, 'billing');

# The ledger really holds what the comparison is meant to cover.
is( $source->safe_psql(
		'billing', q{
	SELECT string_agg(DISTINCT type || ':' || status, ' ' ORDER BY type || ':' || status)
	  FROM credits.transactions}),
	'auto_recharge:pending deposit:completed deposit:failed deposit:pending usage:accumulating usage:completed',
	'source: transactions of every type and status');
is( $source->safe_psql(
		'billing', q{
	SELECT (SELECT count(*) FROM credits.usage_events) > 0 AND (SELECT count(*) FROM credits.usage_rollup) > 0,
	       (SELECT count(*) FROM credits.usage_keys),
	       (SELECT string_agg(DISTINCT kind, ' ' ORDER BY kind) FROM credits.events),
	       (SELECT count(*) FILTER (WHERE acked_at IS NOT NULL) || '/'
	               || count(*) FILTER (WHERE acked_at IS NULL AND claims > 0) || '/'
	               || count(*) FILTER (WHERE claims = 0) FROM credits.events),
	       (SELECT string_agg(resource_id || ':' || state, ' ' ORDER BY resource_id) FROM credits.resources),
	       (SELECT count(*) FROM credits.payment_methods WHERE removed_at IS NOT NULL)}),
	't|3|balance_depleted charge_requested instance_terminated|3/2/3|gpu-1:stopped gpu-2:terminated vol-1:available|1',
	'source: usage events and keys, events in every state, resources, a removed method');
is($before->{accounts} =~ tr/\n//, 3, 'source: four accounts');
is($source->safe_psql('billing', 'SELECT count(*) FROM credits.verify()'), '0', 'source: verify() clean');

# ----------------------------------------------------------------------------------------------
# Dump, and restore into a fresh database on a fresh server.
my $dump = PostgreSQL::Test::Utils::tempdir() . "/billing.dump";
command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $source->connstr('billing') ], 'pg_dump -Fc');

my $target = PostgreSQL::Test::Cluster->new('dump_target');
$target->init;
$target->append_conf('postgresql.conf', $conf);
$target->start;
$target->safe_psql('postgres', 'CREATE DATABASE restored');
command_ok([ 'pg_restore', '--exit-on-error', '-d', $target->connstr('restored'), $dump ],
	'pg_restore into a fresh database');

my $after = snapshot($target, 'restored');
for my $name (sort keys %snapshot)
{
	is($after->{$name}, $before->{$name}, "restored: $name identical");
}
is($target->safe_psql('restored', 'SELECT count(*) FROM credits.verify()'),
	'0', 'restored: verify() clean');
is( $target->safe_psql(
		'restored', q{
	SELECT string_agg(rolname, ' ' ORDER BY rolname) FROM pg_roles WHERE rolname LIKE 'credits\_%'}),
	'credits_app credits_reader credits_worker',
	'restored: the roles exist on the fresh server');
is( $target->safe_psql(
		'restored', q{
	SELECT has_function_privilege('credits_app', 'credits.add_credits(bigint, credits.credits, bigint, text)', 'EXECUTE'),
	       has_function_privilege('credits_app', 'credits.complete_deposit(bigint, bigint, text)', 'EXECUTE'),
	       has_table_privilege('credits_app', 'credits.accounts', 'UPDATE'),
	       has_table_privilege('credits_reader', 'credits.balance_overview', 'SELECT')}),
	't|f|f|t', 'restored: the privileges');

# ----------------------------------------------------------------------------------------------
# Both ledgers go on in the same way: the same calls give the same ids and the same results.
my $next = <<'SQL';
SET client_min_messages = warning;
SET credits.clock = '2026-03-08 10:30+00';
SELECT 'new deposit', credits.add_credits(2, '40.00');
SELECT 'retried key', credits.add_credits(1, '20.00', idempotency_key => 'order-pending');
SELECT 'retried key', credits.add_credits(1, '100.00', idempotency_key => 'order-1');
SELECT 'completed', credits.complete_deposit(1, t.transaction_id, 'https://invoices.example/2')
  FROM credits.transactions t WHERE t.idempotency_key = 'order-pending';
SELECT 'new method', credits.add_payment_method(4, 'pm_4');
SELECT 'retried usage', credits.record_usage(1, 'api:chat', '0.25', 'req-1');
SET credits.clock = '2026-03-08 11:00:05+00';
SELECT 'deducted', credits.run_hourly_deductions();
SELECT 'balances', string_agg(project_id || '=' || balance, ' ' ORDER BY project_id) FROM credits.accounts;
SELECT 'max ids', (SELECT max(transaction_id) FROM credits.transactions),
       (SELECT max(method_id) FROM credits.payment_methods), (SELECT max(event_id) FROM credits.events);
SELECT 'problems', count(*) FROM credits.verify();
SQL
my $source_next = $source->safe_psql('billing', $next);
my $target_next = $target->safe_psql('restored', $next);
is($target_next, $source_next, 'restored: the same calls give the same ids and results');
note($target_next);

my ($max_before) = $before->{transactions} =~ /\A.*\n(\d+)\|[^\n]*\z/s;
my ($new_id) = $target_next =~ /^new deposit\|(\d+)$/m;
ok(defined $max_before && defined $new_id && $new_id > $max_before,
	"restored: a new deposit gets a new id ($new_id after $max_before)");
like($target_next, qr/^retried key\|\d+\nretried key\|\d+$/m, 'restored: idempotency keys still answer');
my ($pending_id) = $before->{transactions} =~ /^(\d+)\|1\|deposit\|pending\|/m;
like($target_next, qr/^retried key\|$pending_id$/m, 'restored: the retried key returns the restored deposit');
like($target_next, qr/^problems\|0$/m, 'restored: verify() clean after more work');

# And the sequences really continued on the restored side: nothing collided above.
is( $target->safe_psql(
		'restored', q{
	SELECT (SELECT count(*) FROM credits.transactions) = (SELECT count(DISTINCT transaction_id) FROM credits.transactions)}),
	't', 'restored: transaction ids unique');

$source->stop;
$target->stop;
done_testing();
