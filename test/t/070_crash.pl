
# Crash test: the soak's load (test/perl/CreditsLoad.pm, 16 clients, a moving billing clock)
# is cut CREDITS_CRASH_ROUNDS times (default 3) by a SIGKILL of the postmaster and every
# backend at a random moment; the server restarts (crash recovery), the billing clock jumps
# ahead by the outage (3 hours), and the next round's clients go on.  Then the clients'
# in-doubt calls (sent, no answer) are retried with their idempotency keys, the missed hours
# are caught up with run_hourly_deductions, and:
#
#   * every acknowledged call is there, exactly once: add_credits under its key with its id,
#     complete_deposit / fail_deposit in their final status, record_usage under its key with
#     its amount, grant_credits and refund_deposit under their keys, complete_refund /
#     fail_refund in their final status;
#   * every in-doubt call, retried, is there exactly once;
#   * API usage is charged once: the usage keys and the API usage transactions agree;
#   * verify() finds nothing, money is conserved (and the lots add up to the balances), one
#     usage transaction per (resource, hour),
#     every ended hour (including those of the outages) is deducted.
#
#   CREDITS_CRASH_ROUNDS=N   crashes (default 3)
#   CREDITS_CRASH_SEED=N     replay the random choices (crash moments, clients; timing differs)
#
# fsync is off: the test kills processes, not the machine, so what a commit wrote to the
# kernel survives either way.  synchronous_commit stays on: an acknowledged commit is in WAL.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use CreditsLoad;

my $rounds  = $ENV{CREDITS_CRASH_ROUNDS} // 3;
my $seed    = $ENV{CREDITS_CRASH_SEED}   // int(rand(2**31));
my $clients = 16;
diag("crash: CREDITS_CRASH_SEED=$seed CREDITS_CRASH_ROUNDS=$rounds");
srand($seed);

my ($node, $dir) = CreditsLoad::start_loaded_node('crash');

for my $round (1 .. $rounds)
{
	my $crash_after = 3 + rand(9);
	diag(sprintf('round %d: crash after %.1f s', $round, $crash_after));
	CreditsLoad::run_round($node, seconds => $crash_after + 30, crash_after => $crash_after,
		clients => $clients, dir => $dir, round => $round, projects => 12, seed => $seed + 100 * $round);
	$node->start;
	# The outage: billing time went on while the server was down.
	$node->safe_psql('postgres', q{UPDATE public.soak_clock SET t = t + interval '3 hours'});
}

my $recoveries = () = slurp_file($node->logfile) =~ /database system was interrupted/g;
is($recoveries, $rounds, "the server recovered from $rounds crashes");

my $logs = CreditsLoad::read_logs($dir);
diag('acknowledged: ' . join(', ', map { "$_ $logs->{ack}{$_}" } sort keys %{ $logs->{ack} }));
diag('errors: ' . join(', ', map { "$_: $logs->{err}{$_}" } sort keys %{ $logs->{err} }));
diag('in doubt: ' . join(', ', map { "$_ " . scalar(keys %{ $logs->{doubt}{$_} }) } sort keys %{ $logs->{doubt} }));
is_deeply($logs->{errors}, [], 'no error but the business rules\' and the crashes\'');

my $at = q{SET search_path = public, credits; SELECT set_config('credits.clock', t::text, false) FROM public.soak_clock;};
sub query { return $node->safe_psql('postgres', $at . $_[0]) =~ s/^[^\n]*\n//r; }
sub rows  { return map { [ split /\|/ ] } grep { length } split /\n/, query($_[0]); }

# Everything acknowledged before the crashes is there.
my %tx_by_key = map { $_->[0] => [ $_->[1], $_->[2] ] }
  rows(q{SELECT idempotency_key, transaction_id, amount FROM credits.transactions WHERE idempotency_key IS NOT NULL});
my %tx = map { $_->[0] => [ $_->[1], $_->[2] ] }
  rows(q{SELECT transaction_id, status, amount FROM credits.transactions WHERE type <> 'usage'});
my %usage_keys = map { $_->[0] => [ $_->[1], $_->[2], $_->[3] ] }
  rows(q{SELECT idempotency_key, project_id, resource_id, amount FROM credits.usage_keys});

my @missing;
while (my ($key, $f) = each %{ $logs->{acked}{add} })
{
	my ($p, $amount, $id) = @$f[ 1 .. 3 ];
	push @missing, "add_credits $key"
	  unless $tx_by_key{$key} && $tx_by_key{$key}[0] eq $id && to_micro($tx_by_key{$key}[1]) == to_micro($amount);
}
while (my ($id, $f) = each %{ $logs->{acked}{complete} })
{
	push @missing, "complete_deposit $id"
	  unless $tx{$id} && $tx{$id}[0] eq 'completed' && to_micro($tx{$id}[1]) == to_micro($f->[2]);
}
while (my ($id, $f) = each %{ $logs->{acked}{fail} })
{
	push @missing, "fail_deposit $id" unless $tx{$id} && $tx{$id}[0] eq 'failed';
}
for my $op (qw(grant refund))
{
	while (my ($key, $f) = each %{ $logs->{acked}{$op} // {} })
	{
		push @missing, "$op $key" unless $tx_by_key{$key} && $tx_by_key{$key}[0] eq $f->[3];
	}
}
while (my ($id, $f) = each %{ $logs->{acked}{refund_complete} // {} })
{
	push @missing, "complete_refund $id" unless $tx{$id} && $tx{$id}[0] eq 'completed';
}
while (my ($id, $f) = each %{ $logs->{acked}{refund_fail} // {} })
{
	push @missing, "fail_refund $id" unless $tx{$id} && $tx{$id}[0] eq 'failed';
}
while (my ($key, $f) = each %{ $logs->{acked}{usage} })
{
	my $k = $usage_keys{$key};
	push @missing, "record_usage $key"
	  unless $k && $k->[0] eq $f->[1] && $k->[1] eq $f->[2] && to_micro($k->[2]) == to_micro($f->[3]);
}
is_deeply(\@missing, [], sprintf('every acknowledged call survived the crashes (%d calls)',
	scalar(map { keys %{ $logs->{acked}{$_} } } keys %{ $logs->{acked} })));

# The calls in doubt, retried as a client would: each is then there exactly once.
my @retry_errors;
my $sql = '';
while (my ($key, $f) = each %{ $logs->{doubt}{add} // {} })
{
	$sql .= "SELECT credits.add_credits($f->[1], '$f->[2]', NULL, '$key');\n";
}
while (my ($key, $f) = each %{ $logs->{doubt}{usage} // {} })
{
	$sql .= "SELECT credits.record_usage($f->[1], '$f->[2]', '$f->[3]', '$key');\n";
}
while (my ($key, $f) = each %{ $logs->{doubt}{batch} // {} })
{
	my @p = $f->[1] =~ /(\d+)/g;
	my @a = $f->[2] =~ /([\d.]+)/g;
	my $keys = join(',', map { "$key.$_" } 1 .. @p);
	my $res = join(',', map { 'api:batch' } @p);
	$sql .= "SELECT credits.record_usage_batch('$f->[1]', '{$res}', '$f->[2]', '{$keys}');\n";
}
for my $op (qw(complete fail refund_complete refund_fail))
{
	my $fn = $op =~ /^refund_(\w+)/ ? "${1}_refund" : "${op}_deposit";
	while (my ($id, $f) = each %{ $logs->{doubt}{$op} // {} })
	{
		# the worker sees the deposit or refund still pending (its call was lost) or already settled
		$sql .= "SELECT credits.$fn($f->[1], $id) FROM credits.transactions
		          WHERE transaction_id = $id AND status = 'pending';\n";
	}
}
while (my ($key, $f) = each %{ $logs->{doubt}{grant} // {} })
{
	# (its arguments are not logged: retried only when it did not commit)
	$sql .= "SELECT credits.grant_credits($f->[1], '$f->[2]', description => 'Load grant', idempotency_key => '$key')
	          WHERE NOT EXISTS (SELECT FROM credits.transactions WHERE idempotency_key = '$key');\n";
}
my ($rc, $out, $err) = $node->psql('postgres', $at . $sql, on_error_stop => 0);
is($err, '', 'the in-doubt calls, retried with their keys, are taken') or diag($err);

my $dup_keys = query(q{SELECT count(*) FROM (SELECT FROM credits.transactions WHERE idempotency_key IS NOT NULL
                      GROUP BY project_id, idempotency_key HAVING count(*) > 1) AS d});
is($dup_keys, '0', 'each add_credits key names one deposit');
my @doubt_usage = (keys %{ $logs->{doubt}{usage} // {} },
	map { my $k = $_; map { "$k.$_" } 1 .. scalar(() = $logs->{doubt}{batch}{$k}[1] =~ /\d+/g) }
	  keys %{ $logs->{doubt}{batch} // {} });
if (@doubt_usage)
{
	my $list = join(',', map { "'$_'" } @doubt_usage);
	is(query("SELECT count(*) FROM credits.usage_keys WHERE idempotency_key IN ($list)"), scalar(@doubt_usage),
		'each in-doubt record_usage is recorded once');
}

# Catch up: the hours of the last outage end, the periodic runs deduct everything.
$node->safe_psql('postgres', q{
	UPDATE public.soak_clock SET t = credits.hour_of(t) + interval '1 hour';
	SELECT set_config('credits.clock', t::text, false) FROM public.soak_clock;
	SELECT credits.run_balance_checks(), credits.run_hourly_deductions();
});

is(query('SELECT count(*) FROM credits.verify()'), '0', 'verify() finds nothing')
  or diag(query('SELECT * FROM credits.verify()'));
my ($deposits, $collected, $balances) = split /\|/, query(q{
	SELECT (SELECT sum(amount) FROM credits.transactions WHERE type <> 'usage' AND status = 'completed'),
	       (SELECT -sum(amount) FROM credits.transactions WHERE type = 'usage' AND status = 'completed'),
	       (SELECT sum(balance) FROM credits.accounts)});
diag("completed deposits $deposits, usage collected $collected, balances $balances");
is(query("SELECT '$deposits'::numeric - '$collected'::numeric = '$balances'::numeric"), 't',
	'completed deposits + grants - expiries - refunds - collected usage = balances');
is(query(q{SELECT sum(remaining) = (SELECT sum(balance) FROM credits.accounts) FROM credits.credit_lots}), 't',
	'the lots\' remaining amounts add up to the balances');

# The history adds up: for every project, the amounts of its completed rows in
# transaction_history are its balance (a usage hour's amount is what it took from the balance).
is(query($CreditsLoad::HISTORY_MISMATCHES), '0', 'every project\'s completed history amounts add up to its balance')
  or diag(query($CreditsLoad::HISTORY_MISMATCH_ROWS));
is(query(q{SELECT (SELECT coalesce(sum(amount), '0') FROM credits.usage_keys)
                = (SELECT coalesce(sum(uncollected - amount), '0') FROM credits.transactions
                    WHERE type = 'usage' AND resource_id LIKE 'api:%')}),
	't', 'API usage charged exactly once: usage keys = API usage transactions');
is(query(q{SELECT count(*) FROM credits.usage_events}), '0', 'every API usage event was folded');
is(query(q{SELECT count(*) FROM (SELECT FROM credits.transactions WHERE type = 'usage'
            GROUP BY project_id, resource_id, usage_hour HAVING count(*) > 1) AS d}),
	'0', 'one usage transaction per (resource, hour)');
is(query(q{SELECT count(*) FROM credits.transactions
            WHERE status = 'accumulating' AND usage_hour < credits.hour_of(credits.now())}),
	'0', 'every ended hour is deducted, the outages\' too');
my $outage_hours = query(q{SELECT count(DISTINCT usage_hour) FROM credits.transactions
                            WHERE type = 'usage' AND status = 'completed'});
diag("$outage_hours billing hours deducted");

$node->stop;
done_testing();

sub to_micro
{
	my ($x) = @_;
	my ($int, $frac) = split /\./, $x;
	return $int * 1_000_000 + substr(($frac // '') . '000000', 0, 6);
}
