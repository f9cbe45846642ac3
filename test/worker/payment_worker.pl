#!/usr/bin/perl
# Usage: test/worker/payment_worker.pl --dsn 'dbi:Pg:dbname=app;host=/var/run/postgresql;user=payment_worker'
#            [--once] [--max-events N] [--provider-mode rules|approve|decline|timeout]
#            [--provider-store DIR] [--provider-delay-ms MS] [--batch N] [--poll S] [--quiet]
#
# The reference payment worker of credits.  It LISTENs on credits_events, claims events with
# credits.claim_events(), and
#   charge_requested   skips (acks) a deposit that is no longer pending; else charges the
#                      deposit or auto-recharge through the payment provider, then
#                      calls credits.complete_deposit(project, tx, invoice_url) when approved or
#                      credits.fail_deposit(project, tx, reason) when declined, and acks the
#                      event in the same database transaction;  on a provider timeout it leaves
#                      the event unacknowledged: it is handed out again after the lease
#                      (setting credits.event_lease, default 300 s) and charged again with the
#                      same idempotency key, which the provider answers without charging twice;
#   refund_requested   skips (acks) a refund that is no longer pending; else refunds it through
#                      the provider (idempotency key "credits-refund-<project>-<tx>") and calls
#                      credits.complete_refund(project, tx) when approved or
#                      credits.fail_refund(project, tx, reason) when declined, acking the event
#                      in the same transaction; a provider timeout leaves it for re-delivery,
#                      as for charges;
#   any other kind     is logged and acked, and charges nothing (instance_terminated,
#                      volume_inaccessible, volume_available, balance_depleted, budget_reached,
#                      instance_stopped, balance_low, runway_low, balance_recovered,
#                      volume_deletion_warning, volume_deleted, billing_error: a real worker
#                      would tell the platform and the customer, or the operators for
#                      billing_error).
#
# Safe to run several at once and to kill at any point:
#   * claim_events never hands one event to two workers while its lease runs;
#   * a claimed event that is not acked (the worker died, or the provider timed out) is
#     handed out again after the lease;
#   * the provider idempotency key is "credits-<project_id>-<transaction_id>" (the transaction
#     id, with the project that owns it: ids are per server when projects are sharded), so a
#     re-delivered event never charges twice;
#   * a deposit is never completed twice: complete_deposit/fail_deposit refuse a deposit that
#     is no longer pending (SQLSTATE 55000); the worker then takes it as done and acks.
#
# Options:
#   --dsn DSN             DBI data source (default: $CREDITS_WORKER_DSN, else dbi:Pg: with the
#                         PG* environment variables)
#   --once                handle what can be claimed now, then exit (events left leased by a
#                         provider timeout are not waited for)
#   --max-events N        exit after handling N events (0: no limit)
#   --provider MODULE     provider class in test/worker (default FakeProvider; see its file
#                         for the interface)
#   --provider-mode M     FakeProvider mode: rules (default), approve, decline, timeout
#   --provider-store DIR  FakeProvider record directory (default /tmp/fake-provider-<uid>)
#   --provider-delay-ms N simulated provider latency per charge
#   --batch N             events claimed at a time (default 10: a slow batch keeps them leased)
#   --poll S              seconds to wait for a notification before looking again (default 5;
#                         leases that run out are not announced)
#   --quiet               no line per event (still a summary at exit)
#
# Database rights: connect as a login role that is a member of credits_worker, for example
#   CREATE ROLE payment_worker LOGIN IN ROLE credits_worker;
# It needs only claim_events, ack_event, complete_deposit, fail_deposit, complete_refund,
# fail_refund and the view
# transaction_history (credits_worker has them, the view through credits_reader).  It never
# sets credits.event_lease (superuser-only).  A batch that takes longer than the lease may be
# handed to another worker meanwhile: harmless (checked, same key, 55000), only wasted work.
#
# Exit status: 0 after --once, --max-events or SIGTERM/SIGINT (the current batch is finished
# first), 1 on a bad option, 2 when the database is unreachable at start.
use strict;
use warnings;

use DBI;
use FindBin;
use Getopt::Long qw(GetOptions);
use IO::Select;
use JSON::PP ();
use POSIX qw(strftime);
use Time::HiRes ();

use lib $FindBin::RealBin;

my %opt = (
	dsn                 => $ENV{CREDITS_WORKER_DSN} // 'dbi:Pg:',
	once                => 0,
	'max-events'        => 0,
	provider            => 'FakeProvider',
	'provider-mode'     => undef,
	'provider-store'    => undef,
	'provider-delay-ms' => undef,
	batch               => 10,
	poll                => 5,
	quiet               => 0,
);
GetOptions(\%opt, 'dsn=s', 'once!', 'max-events=i', 'provider=s', 'provider-mode=s',
	'provider-store=s', 'provider-delay-ms=i', 'batch=i', 'poll=f', 'quiet!')
  or usage();
usage() if @ARGV || $opt{batch} < 1 || $opt{batch} > 10000 || $opt{'max-events'} < 0 || $opt{poll} <= 0;

# Prints the usage block at the top of this file and exits 1.
sub usage
{
	open(my $self, '<', $0) or die "usage: see the top of $0\n";
	while (my $line = <$self>)
	{
		next if $line =~ /^#!/;
		last unless $line =~ /^#/;
		print STDERR $line =~ s/^# ?//r;
	}
	exit 1;
}

$| = 1;
my $stop = 0;
$SIG{TERM} = $SIG{INT} = sub { $stop++; exit 0 if $stop > 1 };    # a second signal: now

sub say_log
{
	my ($fmt, @args) = @_;
	printf "%s payment_worker[%d] $fmt\n", strftime('%H:%M:%S', localtime), $$, @args;
}

$opt{provider} =~ /^\w+(::\w+)*$/ or die "bad provider class '$opt{provider}'\n";
eval "require $opt{provider}; 1" or die "cannot load provider $opt{provider}: $@";
my $provider = $opt{provider}->new(
	(defined $opt{'provider-mode'}     ? (mode     => $opt{'provider-mode'})     : ()),
	(defined $opt{'provider-store'}    ? (store    => $opt{'provider-store'})    : ()),
	(defined $opt{'provider-delay-ms'} ? (delay_ms => $opt{'provider-delay-ms'}) : ()));

my $json = JSON::PP->new;
my %count = map { $_ => 0 } qw(completed failed done_before timeout other errors refunded refund_failed);

# Connects, LISTENs, and returns the handle (undef when unreachable).
sub db_connect
{
	my $dbh = DBI->connect($opt{dsn}, undef, undef,
		{ AutoCommit => 1, RaiseError => 1, PrintError => 0, pg_enable_utf8 => 1 });
	return undef unless $dbh;
	$dbh->do(q{SET application_name = 'credits payment_worker'});
	$dbh->do('LISTEN credits_events');
	return $dbh;
}

my $dbh = eval { db_connect() };
if (!$dbh)
{
	print STDERR "payment_worker: cannot connect to $opt{dsn}: " . ($DBI::errstr // $@) . "\n";
	exit 2;
}
say_log('started: provider %s (%s), batch %d%s%s', $opt{provider}, $provider->{mode} // '-', $opt{batch},
	$opt{once} ? ', once' : '', $opt{'max-events'} ? ", at most $opt{'max-events'} events" : '');

# Runs one statement and ack_event in one transaction.  Returns 'ok', or 'done_before' when the
# deposit was no longer pending (55000) and the event was acked alone; dies on other errors
# (the event stays unacknowledged and comes back after the lease).
sub settle_and_ack
{
	my ($event, $sql, @args) = @_;
	my $ok = eval {
		$dbh->begin_work;
		$dbh->selectrow_array($sql, undef, @args);
		$dbh->do('SELECT credits.ack_event(?)', undef, $event->{event_id});
		$dbh->commit;
		1;
	};
	return 'ok' if $ok;
	my ($err, $state) = ($@, $dbh->state);
	eval { $dbh->rollback };
	if ($state eq '55000')
	{
		# Someone completed or failed it already (another worker whose lease ran out, or an
		# operator): nothing is charged twice; take it as done.
		$dbh->do('SELECT credits.ack_event(?)', undef, $event->{event_id});
		return 'done_before';
	}
	die $err;
}

# Handles one claimed event.
sub handle
{
	my ($e) = @_;
	my $payload = $json->decode($e->{payload});
	my $again = $e->{claims} > 1 ? " (delivery $e->{claims})" : '';
	return handle_refund($e, $payload, $again) if $e->{kind} eq 'refund_requested';
	if ($e->{kind} ne 'charge_requested')
	{
		$dbh->do('SELECT credits.ack_event(?)', undef, $e->{event_id});
		$count{other}++;
		say_log('event %d: %s project %d%s%s: acked', $e->{event_id}, $e->{kind}, $e->{project_id},
			defined $e->{resource_id} ? " resource $e->{resource_id}" : '', $again)
		  unless $opt{quiet};
		return;
	}

	my ($project, $tx) = ($e->{project_id}, $e->{transaction_id});
	my $key = "credits-$project-$tx";
	# Not charged at all when it was completed or failed meanwhile (by another worker whose
	# lease ran out, or by an operator).  Checking is not enough to prevent a double charge
	# (it may change right after): the idempotency key does that.
	my ($status) = $dbh->selectrow_array(
		'SELECT status FROM credits.transaction_history WHERE project_id = ? AND transaction_id = ?',
		undef, $project, $tx);
	if (($status // '') ne 'pending')
	{
		$dbh->do('SELECT credits.ack_event(?)', undef, $e->{event_id});
		$count{done_before}++;
		say_log('event %d: charge for tx %d of project %d is %s: acked, not charged%s', $e->{event_id}, $tx,
			$project, $status // 'unknown', $again)
		  unless $opt{quiet};
		return;
	}
	my $r = $provider->charge(key => $key, amount => $payload->{amount},
		provider_ref => $payload->{provider_ref}, reference => $tx);
	my $what = sprintf('event %d: charge %s %s of project %d, %s on %s%s', $e->{event_id},
		$payload->{type} // 'deposit', $payload->{amount}, $project, "tx $tx",
		$payload->{provider_ref} // '?', $again . ($r->{replayed} ? ', provider replayed the first answer' : ''));
	if ($r->{status} eq 'approved')
	{
		my $res = settle_and_ack($e, 'SELECT credits.complete_deposit(?, ?, ?)', $project, $tx, $r->{invoice_url});
		$count{ $res eq 'ok' ? 'completed' : 'done_before' }++;
		say_log('%s: approved, %s', $what, $res eq 'ok' ? "completed ($r->{invoice_url})" : 'no longer pending, acked')
		  unless $opt{quiet};
	}
	elsif ($r->{status} eq 'declined')
	{
		my $res = settle_and_ack($e, 'SELECT credits.fail_deposit(?, ?, ?)', $project, $tx, $r->{reason});
		$count{ $res eq 'ok' ? 'failed' : 'done_before' }++;
		say_log('%s: declined (%s), %s', $what, $r->{reason}, $res eq 'ok' ? 'failed' : 'no longer pending, acked')
		  unless $opt{quiet};
	}
	else
	{
		$count{timeout}++;
		say_log('%s: provider timed out; left for re-delivery after the lease', $what) unless $opt{quiet};
	}
}

# Handles one claimed refund_requested event: refunds through the provider once per key, then
# completes or fails the refund (and acks) in one transaction.
sub handle_refund
{
	my ($e, $payload, $again) = @_;
	my ($project, $tx) = ($e->{project_id}, $e->{transaction_id});
	my ($status) = $dbh->selectrow_array(
		'SELECT status FROM credits.transaction_history WHERE project_id = ? AND transaction_id = ?',
		undef, $project, $tx);
	if (($status // '') ne 'pending')
	{
		$dbh->do('SELECT credits.ack_event(?)', undef, $e->{event_id});
		$count{done_before}++;
		say_log('event %d: refund tx %d of project %d is %s: acked, not refunded%s', $e->{event_id}, $tx,
			$project, $status // 'unknown', $again)
		  unless $opt{quiet};
		return;
	}
	my $r = $provider->refund(key => "credits-refund-$project-$tx", amount => $payload->{amount},
		provider_ref => $payload->{provider_ref}, reference => $tx);
	my $what = sprintf('event %d: refund %s of project %d, tx %d on %s (deposit %s)%s', $e->{event_id},
		$payload->{amount}, $project, $tx, $payload->{provider_ref} // '?',
		$payload->{deposit_transaction_id} // '?', $again);
	if ($r->{status} eq 'approved' || $r->{status} eq 'declined')
	{
		my $ok = $r->{status} eq 'approved';
		my $res = $ok
		  ? settle_and_ack($e, 'SELECT credits.complete_refund(?, ?)', $project, $tx)
		  : settle_and_ack($e, 'SELECT credits.fail_refund(?, ?, ?)', $project, $tx, $r->{reason});
		$count{ $res ne 'ok' ? 'done_before' : $ok ? 'refunded' : 'refund_failed' }++;
		say_log('%s: %s', $what, $res ne 'ok' ? 'no longer pending, acked'
			  : $ok ? 'refunded, completed' : "declined ($r->{reason}), failed")
		  unless $opt{quiet};
	}
	else
	{
		$count{timeout}++;
		say_log('%s: provider timed out; left for re-delivery after the lease', $what) unless $opt{quiet};
	}
}

my $handled = 0;
my $sel;
while (!$stop)
{
	my $want = $opt{batch};
	if ($opt{'max-events'})
	{
		my $left = $opt{'max-events'} - $handled;
		last if $left <= 0;
		$want = $left if $left < $want;
	}
	my $events = eval {
		$dbh->selectall_arrayref(
			'SELECT event_id, project_id, kind, resource_id, transaction_id, payload::text AS payload, claims
			   FROM credits.claim_events(?) ORDER BY event_id', { Slice => {} }, $want);
	};
	if (!$events)
	{
		my $err = $@;
		$count{errors}++;
		say_log('claim failed: %s', $err =~ s/\s+$//r);
		if (!$dbh->ping)
		{
			last if $opt{once};
			Time::HiRes::sleep(1);
			$dbh = eval { db_connect() } // $dbh;
			$sel = undef;
		}
		else
		{
			Time::HiRes::sleep(1);
		}
		next;
	}
	for my $e (@$events)
	{
		$handled++;
		if (!eval { handle($e); 1 })
		{
			$count{errors}++;
			say_log('event %d (%s, project %d): error, left for re-delivery: %s',
				$e->{event_id}, $e->{kind}, $e->{project_id}, $@ =~ s/\s+$//r);
		}
	}
	next if @$events;
	last if $opt{once};

	# Nothing claimable: wait for a NOTIFY (or the poll interval, for leases that ran out).
	$sel //= IO::Select->new($dbh->{pg_socket});
	$sel->can_read($opt{poll});
	eval { 1 while $dbh->pg_notifies };
}

say_log('exiting: %d events handled: %d completed, %d failed, %d refunded, %d refunds failed, %d done before, '
	  . '%d provider timeouts, %d other events acked, %d errors',
	$handled, @count{qw(completed failed refunded refund_failed done_before timeout other errors)});
$dbh->disconnect;
exit 0;
