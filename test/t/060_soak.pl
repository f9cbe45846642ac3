
# Concurrent soak: 16 clients hammer one server for CREDITS_SOAK_SECONDS (default 60) with
# deposits and a payment worker, API usage (single, batched, retried), instances, volumes,
# payment methods, both periodic runs and the views, while a ticker moves the billing clock
# 2 minutes every 100 ms, so that some 20 billing hours end during the run
# (test/perl/CreditsLoad.pm).  Then the last hours are deducted and the ledger is checked:
#
#   * no error but the ones the business rules give (55000, P0002, 55006); deadlocks (40P01)
#     and serialization failures (40001) are counted, reported, and fail the test, with the
#     server log's report of each deadlock;
#   * verify() finds nothing;
#   * money is conserved: the completed deposits and grants minus the collected usage, the
#     expiries and the completed refunds are the balances, and the lots' remaining amounts;
#   * every grant acknowledged is there, and every refund the workers completed or failed is so;
#   * every deposit a worker saw completed is completed, and no other is;
#   * every acknowledged API usage is counted once: the usage keys, the API usage
#     transactions and what the clients were told agree to the micro-credit;
#   * every (resource, hour) has one usage transaction, and every ended hour is deducted.
#
#   CREDITS_SOAK_SECONDS=N   length of the load (default 60)
#   CREDITS_SOAK_CLIENTS=N   clients (default 16)
#   CREDITS_SOAK_SEED=N      replay the clients' random choices (timing still differs)
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use CreditsLoad;

my $seconds = $ENV{CREDITS_SOAK_SECONDS} // 60;
my $clients = $ENV{CREDITS_SOAK_CLIENTS} // 16;
my $seed    = $ENV{CREDITS_SOAK_SEED}    // int(rand(2**31));
diag("soak: CREDITS_SOAK_SEED=$seed CREDITS_SOAK_SECONDS=$seconds CREDITS_SOAK_CLIENTS=$clients");

my ($node, $dir) = CreditsLoad::start_loaded_node('soak');

my $t0 = time();
CreditsLoad::run_round($node, seconds => $seconds, clients => $clients, dir => $dir, round => 1,
	projects => 12, seed => $seed);
diag(sprintf('load ran %.0f s', time() - $t0));

my $logs = CreditsLoad::read_logs($dir);
diag('acknowledged: ' . join(', ', map { "$_ $logs->{ack}{$_}" } sort keys %{ $logs->{ack} }));
diag('errors: ' . join(', ', map { "$_: $logs->{err}{$_}" } sort keys %{ $logs->{err} }));

# Deadlocks and serialization failures, from the clients and from the server log.
my $server_log = slurp_file($node->logfile);
my $deadlocks = 0;
my $serialization = 0;
for (keys %{ $logs->{err} })
{
	$deadlocks     += $logs->{err}{$_} if /\b40P01$/;
	$serialization += $logs->{err}{$_} if /\b40001$/;
}
diag("deadlocks: $deadlocks, serialization failures: $serialization");
is($deadlocks, 0, 'no deadlock') or diag(deadlock_reports($server_log));
is($serialization, 0, 'no serialization failure');
is_deeply([ grep { !/\b(40P01|40001)\b/ } @{ $logs->{errors} } ], [],
	'no error but the business rules\' (55000, P0002, 55006)');

# The load is over: end the last hours and deduct them.
$node->safe_psql('postgres', q{
	UPDATE public.soak_clock SET t = credits.hour_of(t) + interval '2 hours';
	SELECT set_config('credits.clock', t::text, false) FROM public.soak_clock;
	SELECT credits.run_balance_checks(), credits.run_hourly_deductions();
});
my $at = q{SET search_path = public, credits; SELECT set_config('credits.clock', t::text, false) FROM public.soak_clock;};
sub query { return $node->safe_psql('postgres', $at . $_[0]) =~ s/^[^\n]*\n//r; }

is(query('SELECT count(*) FROM credits.verify()'), '0', 'verify() finds nothing')
  or diag(query('SELECT * FROM credits.verify()'));

# Money: deposits and grants in; usage, expiries and refunds out; balances.  (Every
# non-usage completed amount is signed: grants positive, expiries and refunds negative.)
my ($deposits, $collected, $uncollected, $balances) = split /\|/, query(q{
	SELECT (SELECT sum(amount) FROM credits.transactions WHERE type <> 'usage' AND status = 'completed'),
	       (SELECT -sum(amount) FROM credits.transactions WHERE type = 'usage' AND status = 'completed'),
	       (SELECT sum(uncollected) FROM credits.transactions WHERE type = 'usage'),
	       (SELECT sum(balance) FROM credits.accounts)});
diag("completed deposits $deposits, usage collected $collected (uncollected $uncollected), balances $balances");
is(query("SELECT '$deposits'::numeric - '$collected'::numeric = '$balances'::numeric"), 't',
	'completed deposits + grants - expiries - refunds - collected usage = balances');
is(query(q{SELECT sum(remaining) = (SELECT sum(balance) FROM credits.accounts) FROM credits.credit_lots}), 't',
	'the lots\' remaining amounts add up to the balances');
diag('lots: ' . join(', ', split /\n/, query(q{SELECT kind || ' ' || state || ' ' || count(*) FROM credits.lots GROUP BY kind, state ORDER BY 1})));
diag('grants, expiries, refunds: ' . join(', ', split /\n/, query(q{SELECT type || ' ' || status || ' ' || count(*)
	FROM credits.transactions WHERE type::text IN ('grant', 'expiry', 'refund') GROUP BY type, status ORDER BY 1})));

# Grants and refunds: what the clients and workers were told is what the ledger holds.
is_deeply({ map { split /\|/ } split /\n/, query(q{SELECT idempotency_key, transaction_id FROM credits.transactions
                                                  WHERE type::text = 'grant'}) },
	{ map { $_ => $logs->{acked}{grant}{$_}[3] } keys %{ $logs->{acked}{grant} } },
	'every acknowledged grant is there under its key, and nothing else');
is_deeply({ map { split /\|/ } split /\n/, query(q{SELECT idempotency_key, transaction_id FROM credits.transactions
                                                  WHERE type::text = 'refund'}) },
	{ map { $_ => $logs->{acked}{refund}{$_}[3] } keys %{ $logs->{acked}{refund} } },
	'every acknowledged refund request is there under its key, and nothing else');
is_deeply([ sort split /\n/, query(q{SELECT transaction_id FROM credits.transactions WHERE type::text = 'refund' AND status = 'completed'}) ],
	[ sort keys %{ $logs->{acked}{refund_complete} // {} } ], 'the refunds the workers completed, and only those, are completed');
is_deeply([ sort split /\n/, query(q{SELECT transaction_id FROM credits.transactions WHERE type::text = 'refund' AND status = 'failed'}) ],
	[ sort keys %{ $logs->{acked}{refund_fail} // {} } ], 'the refunds the workers failed are failed');

# The history adds up: for every project, the amounts of its completed rows in
# transaction_history are its balance (a usage hour's amount is what it took from the balance).
is(query($CreditsLoad::HISTORY_MISMATCHES), '0', 'every project\'s completed history amounts add up to its balance')
  or diag(query($CreditsLoad::HISTORY_MISMATCH_ROWS));

# Deposits: what the workers were told is what the ledger holds.
my %completed_by_clients = map { $_ => $logs->{acked}{complete}{$_}[2] } keys %{ $logs->{acked}{complete} };
my %completed_in_db = map { split /\|/ } split /\n/,
  query(q{SELECT transaction_id, amount FROM credits.transactions
           WHERE type IN ('deposit', 'auto_recharge') AND status = 'completed' AND coalesce(idempotency_key, '') NOT LIKE 'setup-%'});
is_deeply(\%completed_in_db, \%completed_by_clients, 'the deposits the workers completed, and only those, are completed');
my %failed_in_db = map { $_ => 1 } split /\n/, query(q{SELECT transaction_id FROM credits.transactions
                                                     WHERE status = 'failed' AND type IN ('deposit', 'auto_recharge')});
is_deeply(\%failed_in_db, { map { $_ => 1 } keys %{ $logs->{acked}{fail} } }, 'the deposits the workers failed are failed');
my %added_in_db = map { split /\|/ } split /\n/,
  query(q{SELECT idempotency_key, transaction_id FROM credits.transactions
           WHERE idempotency_key NOT LIKE 'setup-%' AND type = 'deposit'});
is_deeply(\%added_in_db, { map { $_ => $logs->{acked}{add}{$_}[3] } keys %{ $logs->{acked}{add} } },
	'every acknowledged add_credits is there under its key, and nothing else');

# API usage: counted exactly once.
my $acked_usage = 0;
$acked_usage += to_micro($_->[3]) for values %{ $logs->{acked}{usage} };
my ($keys_total, $api_total, $unfolded) = split /\|/, query(q{
	SELECT (SELECT coalesce(sum(amount), '0')::numeric * 1000000 FROM credits.usage_keys),
	       (SELECT coalesce(sum(uncollected - amount), '0')::numeric * 1000000 FROM credits.transactions
	         WHERE type = 'usage' AND resource_id LIKE 'api:%'),
	       (SELECT count(*) FROM credits.usage_events)});
is($keys_total + 0, $acked_usage, 'the usage keys hold exactly the acknowledged API usage');
is($api_total + 0, $acked_usage, 'the API usage transactions charge exactly the acknowledged API usage');
is($unfolded, '0', 'every API usage event was folded');

# Hours: one usage transaction per (resource, hour); every ended hour deducted.
is(query(q{SELECT count(*) FROM (SELECT FROM credits.transactions WHERE type = 'usage'
            GROUP BY project_id, resource_id, usage_hour HAVING count(*) > 1) AS d}),
	'0', 'one usage transaction per (resource, hour)');
is(query(q{SELECT count(*) FROM credits.transactions
            WHERE status = 'accumulating' AND usage_hour < credits.hour_of(credits.now())}),
	'0', 'every ended hour is deducted');
my ($hours, $usage_rows) = split /\|/, query(q{SELECT count(DISTINCT usage_hour), count(*) FROM credits.transactions
                                              WHERE type = 'usage' AND status = 'completed'});
cmp_ok($hours, '>=', 10, "hours ended during the soak ($hours hours, $usage_rows usage transactions)");
diag('events: ' . join(', ', split /\n/, query(q{SELECT kind || ' ' || count(*) FROM credits.events GROUP BY kind ORDER BY kind})));
diag('resources: ' . join(', ', split /\n/, query(q{SELECT kind || ' ' || state || ' ' || count(*) FROM credits.resources GROUP BY kind, state ORDER BY 1})));

$node->stop;
done_testing();

sub to_micro
{
	my ($x) = @_;
	my ($int, $frac) = split /\./, $x;
	return $int * 1_000_000 + substr(($frac // '') . '000000', 0, 6);
}

# The server log's deadlock reports, with their details and statements.
sub deadlock_reports
{
	my ($log) = @_;
	my @out;
	my @lines = split /\n/, $log;
	for my $i (0 .. $#lines)
	{
		next unless $lines[$i] =~ /deadlock detected/;
		push @out, @lines[ $i .. ($i + 12 > $#lines ? $#lines : $i + 12) ], '';
	}
	return join("\n", @out[ 0 .. ($#out > 200 ? 200 : $#out) ]);
}
