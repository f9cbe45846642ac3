
# Concurrent load for the soak (060_soak.pl) and crash (070_crash.pl) TAP tests.
#
# A round forks a ticker and N client processes (DBD::Pg, each its own connection, all as
# the superuser so that they may set credits.clock).  The billing clock lives in the table
# public.soak_clock: the ticker advances it by a few simulated minutes every 100 ms, and every
# client transaction starts with
#     SELECT set_config('credits.clock', t::text, true) FROM public.soak_clock
# so that transactions run at a shared, moving billing time and hours end during the round
# (including transactions that started before an hour ended and run alongside its deduction).
#
# Clients pick operations at random: deposits (add_credits with a key), a payment worker
# (claim_events, complete_deposit or fail_deposit, ack_event), API usage (record_usage and
# record_usage_batch, every call with an idempotency key, and retries of acknowledged keys),
# instances (start, stop, rate change), volumes (attach, delete), payment methods, grants
# (some expiring, some for some kinds only), refunds of completed deposits (settled by the
# worker: refund_requested, complete_refund or fail_refund), both periodic runs and reads of
# the views.  Each client appends to its own log, flushed per line:
#     try <op> <key> ...      before a call that writes
#     ack <op> <key> ...      after its COMMIT returned
#     err <op> <sqlstate> <message>
# so that after a crash the acknowledged operations are known, and the ones in doubt too.
package CreditsLoad;

use strict;
use warnings;

use DBI;
use File::Basename qw(basename);
use POSIX ();
use CreditsNode;
use PostgreSQL::Test::Utils ();
use Time::HiRes qw(time sleep);

# SQLSTATEs the business rules give under this load: no available balance, terminated
# instance or deleted volume reused, deposit already settled (55000); instance never started,
# method gone (P0002); method used by auto-recharge (55006).
our %EXPECTED = map { $_ => 1 } qw(55000 P0002 55006);

# The history adds up: the projects whose completed amounts in transaction_history are not
# their balance (a usage hour's amount is what it took from the balance): a count, and the
# first of them.
our $HISTORY_MISMATCHES = q{SELECT count(*) FROM credits.accounts a
    WHERE a.balance <> (SELECT coalesce(sum(h.amount), '0') FROM credits.transaction_history h
                         WHERE h.project_id = a.project_id AND h.status = 'completed')};
our $HISTORY_MISMATCH_ROWS = q{SELECT a.project_id, a.balance, sum(h.amount) FROM credits.accounts a
      JOIN credits.transaction_history h ON h.project_id = a.project_id AND h.status = 'completed'
     GROUP BY a.project_id, a.balance HAVING a.balance <> sum(h.amount) LIMIT 10};

# Starts server $name with the load's projects set up; returns it and this test's emptied log dir.
sub start_loaded_node
{
	my ($name) = @_;
	my $node = CreditsNode::start_node($name, <<'CONF');
max_connections = 40
deadlock_timeout = 200ms
log_line_prefix = '%m [%p] '
CONF

	setup($node, projects => 12);
	my $dir = "$PostgreSQL::Test::Utils::log_path/" . basename($0, '.pl');    # e.g. .../060_soak
	mkdir $dir;
	unlink glob "$dir/*.log";
	return ($node, $dir);
}

# Creates the clock table and the projects: each with a default payment method, some with
# auto-recharge, a first completed deposit.
sub setup
{
	my ($node, %o) = @_;
	my $projects = $o{projects} // 12;
	$node->safe_psql('postgres', <<"SQL");
CREATE EXTENSION IF NOT EXISTS credits;
CREATE TABLE public.soak_clock (t timestamptz NOT NULL);
INSERT INTO public.soak_clock VALUES ('2026-05-01 00:05+00');
SET credits.clock = '2026-05-01 00:05+00';
SELECT credits.open_account(p), credits.add_payment_method(p, 'pm_' || p || '_0', 'card ' || p)
  FROM generate_series(1, $projects) AS p;
SELECT credits.configure_auto_recharge(p, true, '20.00', '40.00')
  FROM generate_series(1, $projects) AS p WHERE p % 3 = 0;
SELECT credits.complete_deposit(p, credits.add_credits(p, '30.00', NULL, 'setup-' || p))
  FROM generate_series(1, $projects) AS p;
SQL
	return;
}

sub connect_node
{
	my ($node) = @_;
	my $dbh = DBI->connect('dbi:Pg:dbname=postgres;host=' . $node->host . ';port=' . $node->port,
		'', '', { AutoCommit => 1, RaiseError => 0, PrintError => 0, pg_server_prepare => 0 });
	$dbh->do("SET client_min_messages = warning") if $dbh;
	return $dbh;
}

# Runs one round: a ticker and $o{clients} clients for $o{seconds} seconds.  $o{crash_after}
# (seconds) kills every process of the server with SIGKILL at that moment instead of letting
# the round end.  Logs go to "$o{dir}/round$o{round}-*.log".  Returns when every child exited.
sub run_round
{
	my ($node, %o) = @_;
	my $seconds = $o{seconds};
	my $deadline = time() + $seconds;
	my @pids;

	push @pids, spawn(sub { ticker($node, $deadline, $o{tick_minutes} // 2) });
	for my $c (1 .. $o{clients})
	{
		my $log = "$o{dir}/round$o{round}-client$c.log";
		push @pids, spawn(sub {
			client($node, $deadline, $log, "r$o{round}c$c", $c, $o{projects} // 12, $o{seed} + $c) });
	}
	if (defined $o{crash_after})
	{
		sleep($o{crash_after});
		crash_server($node);
	}
	waitpid($_, 0) for @pids;
	return;
}

sub spawn
{
	my ($code) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		my $rc = eval { $code->(); 0 } // 1;
		print STDERR "child $$: $@" if $@;
		POSIX::_exit($rc);
	}
	return $pid;
}

# SIGKILL to every process of the server (a crash of the database processes; an orphaned
# backend must not go on after the postmaster died).  The postmaster is stopped first, so that
# it forks nothing new and its children keep it as their parent while they are found and
# killed; then it is killed too.
sub crash_server
{
	my ($node) = @_;
	my $postmaster = $node->{_pid};
	kill 'STOP', $postmaster;
	for (1 .. 100)
	{
		my @kids = children_of($postmaster);
		last unless @kids;
		kill 'KILL', @kids;
		sleep 0.05;
	}
	kill 'KILL', $postmaster;
	kill 'CONT', $postmaster;
	$node->kill9;    # forgets the pid
	for (1 .. 200)
	{
		last unless kill 0, $postmaster;
		sleep 0.05;
	}
	return;
}

sub children_of
{
	my ($ppid) = @_;
	my @kids;
	for my $stat (glob '/proc/[0-9]*/stat')
	{
		open my $fh, '<', $stat or next;
		my $line = <$fh>;
		close $fh;
		# (zombies are dead already: a stopped parent cannot reap them)
		next unless defined $line && $line =~ /^(\d+) \(.*\) (\S) (\d+) /;
		push @kids, $1 if $3 == $ppid && $2 ne 'Z';
	}
	return @kids;
}

sub ticker
{
	my ($node, $deadline, $minutes) = @_;
	my $dbh = connect_node($node) or return;
	while (time() < $deadline)
	{
		$dbh->do("UPDATE public.soak_clock SET t = t + interval '$minutes minutes'") or return;
		sleep 0.1;
	}
	return;
}

# One client: random operations until the deadline or until the server is gone.
sub client
{
	my ($node, $deadline, $logfile, $tag, $c, $projects, $seed) = @_;
	srand($seed);
	open my $log, '>>', $logfile or die "cannot write $logfile: $!";
	$log->autoflush(1);
	my $dbh = connect_node($node) or return;
	my $n = 0;
	my @acked_usage;    # [key, project, resource, amount] for idempotent retries
	my $volumes = 0;
	my @attached;    # [project, volume] this client attached
	my $methods = 0;
	my %st = (dbh => $dbh, log => $log);

	my @ops = (
		[ deposit  => 3 ],  [ worker   => 8 ],  [ usage    => 30 ], [ batch    => 5 ],
		[ retry    => 3 ],  [ instance => 14 ], [ volume   => 6 ],  [ method   => 1 ],
		[ checks   => 4 ],  [ hourly   => 2 ],  [ read     => 6 ],  [ grant    => 2 ],
		[ refund   => 2 ]);
	my $total = 0;
	$total += $_->[1] for @ops;

	while (time() < $deadline)
	{
		my $r = rand($total);
		my $op;
		for (@ops) { $op = $_->[0]; last if ($r -= $_->[1]) < 0; }
		my $p = 1 + int(rand($projects));
		my $key = "$tag-" . ++$n;

		if ($op eq 'deposit')
		{
			my $amount = sprintf('%.2f', 5 + rand(45));
			say($log, 'try', 'add', $key, $p, $amount);
			my ($id) = txn(\%st, 'add', 'SELECT credits.add_credits(?, ?, NULL, ?)', $p, $amount, $key);
			say($log, 'ack', 'add', $key, $p, $amount, $id) if defined $id;
		}
		elsif ($op eq 'worker')
		{
			worker(\%st, $tag);
		}
		elsif ($op eq 'grant')
		{
			# promotional credit: some expire within the next hours, some pay only for some kinds
			my $amount = sprintf('%.2f', 1 + rand(30));
			my $expires = rand() < 0.5 ? undef : sprintf('%d minutes', 10 + int(rand(240)));
			my $kinds = (undef, undef, '{instance}', '{api}', '{volume,api}')[ int(rand(5)) ];
			my $priority = int(rand(101));
			say($log, 'try', 'grant', $key, $p, $amount);
			my ($id) = txn(\%st, 'grant',
				'SELECT credits.grant_credits(?, ?, credits.now() + ?::interval, ?, ?, ?, ?)',
				$p, $amount, $expires, $priority, $kinds, 'Load grant', $key);
			say($log, 'ack', 'grant', $key, $p, $amount, $id) if defined $id;
		}
		elsif ($op eq 'refund')
		{
			# a part of a completed deposit (refused with 55000 when less of it is unused)
			my $amount = sprintf('%.2f', 0.5 + rand(10));
			say($log, 'try', 'refund', $key, $p, $amount);
			my ($id) = txn(\%st, 'refund',
				'SELECT credits.refund_deposit(t.project_id, t.transaction_id, ?, NULL, ?)
				   FROM credits.transactions t
				  WHERE t.project_id = ? AND t.type IN (\'deposit\', \'auto_recharge\') AND t.status = \'completed\'
				  ORDER BY t.transaction_id DESC LIMIT 1', $amount, $key, $p);
			say($log, 'ack', 'refund', $key, $p, $amount, $id) if defined $id;
		}
		elsif ($op eq 'usage')
		{
			my $res = 'api:' . (qw(chat embed image))[ int(rand(3)) ];
			my $amount = sprintf('%.6f', rand(1) + 0.000001);
			say($log, 'try', 'usage', $key, $p, $res, $amount);
			if (txn_ok(\%st, 'usage', 'SELECT credits.record_usage(?, ?, ?, ?)', $p, $res, $amount, $key))
			{
				say($log, 'ack', 'usage', $key, $p, $res, $amount);
				push @acked_usage, [ $key, $p, $res, $amount ];
			}
		}
		elsif ($op eq 'batch')
		{
			my (@p, @r, @a, @k);
			for my $i (1 .. 1 + int(rand(4)))
			{
				push @p, 1 + int(rand($projects));
				push @r, 'api:batch';
				push @a, sprintf('%.6f', rand(0.5) + 0.000001);
				push @k, "$key.$i";
			}
			my $arr = sub { '{' . join(',', @_) . '}' };
			say($log, 'try', 'batch', $key, $arr->(@p), $arr->(@a));
			if (txn_ok(\%st, 'batch', 'SELECT credits.record_usage_batch(?, ?, ?, ?)',
					$arr->(@p), $arr->(@r), $arr->(@a), $arr->(@k)))
			{
				for my $i (0 .. $#p)
				{
					say($log, 'ack', 'usage', $k[$i], $p[$i], $r[$i], $a[$i]);
					push @acked_usage, [ $k[$i], $p[$i], $r[$i], $a[$i] ];
				}
			}
		}
		elsif ($op eq 'retry' && @acked_usage)
		{
			# A client that did not see the answer sends the same call again: counted once.
			my $u = $acked_usage[ int(rand(@acked_usage)) ];
			txn_ok(\%st, 'retry', 'SELECT credits.record_usage(?, ?, ?, ?)', $u->[1], $u->[2], $u->[3], $u->[0]);
		}
		elsif ($op eq 'instance')
		{
			# three instance ids per project, renewed every 15 s: terminated ones cannot start again
			my $res = "i-$p-" . int(time() / 15) . '-' . int(rand(3));
			if (rand() < 0.5)
			{
				my $rate = (qw(20.00 60.00 150.00))[ int(rand(3)) ];
				txn_ok(\%st, 'start', 'SELECT credits.start_instance(?, ?, ?)', $p, $res, $rate);
			}
			else
			{
				txn_ok(\%st, 'stop', 'SELECT credits.stop_instance(?, ?)', $p, $res);
			}
		}
		elsif ($op eq 'volume')
		{
			if (rand() < 0.5 || !@attached)
			{
				my $res = "v-$p-$c-" . ++$volumes;
				push @attached, [ $p, $res ]
				  if txn_ok(\%st, 'attach', 'SELECT credits.attach_volume(?, ?, ?)', $p, $res, '5.00');
			}
			else
			{
				my $v = splice(@attached, int(rand(@attached)), 1);
				txn_ok(\%st, 'delete', 'SELECT credits.delete_volume(?, ?)', @$v);
			}
		}
		elsif ($op eq 'method')
		{
			if (rand() < 0.7)
			{
				txn_ok(\%st, 'method_add', 'SELECT credits.add_payment_method(?, ?, NULL, ?)',
					$p, "pm_${p}_$tag-" . ++$methods, rand() < 0.5 ? 'true' : 'false');
			}
			else
			{
				txn_ok(\%st, 'method_remove',
					'SELECT credits.remove_payment_method(project_id, max(method_id)) FROM credits.payment_methods
					  WHERE project_id = ? AND removed_at IS NULL AND NOT is_default GROUP BY project_id', $p);
			}
		}
		elsif ($op eq 'checks')
		{
			txn_ok(\%st, 'checks', 'SELECT credits.run_balance_checks()');
		}
		elsif ($op eq 'hourly')
		{
			txn_ok(\%st, 'hourly', 'SELECT credits.run_hourly_deductions()');
		}
		elsif ($op eq 'read')
		{
			txn_ok(\%st, 'read', 'SELECT count(*) FROM credits.balance_overview b
				JOIN credits.transaction_history h USING (project_id) WHERE b.project_id = ?', $p);
		}
		last if $st{gone};
	}
	$dbh->disconnect unless $st{gone};
	close $log;
	return;
}

# The payment worker: claims a few events and settles the charges they ask for (85 %
# completed, with an invoice, 15 % declined) and the refunds (80 % completed, 20 % failed),
# then acknowledges them.  An event whose lease
# ran out (the lease is in billing time, which runs fast here) may be claimed by two workers:
# the second one gets 55000 and acknowledges it, as README's worker loop says.
sub worker
{
	my ($st, $tag) = @_;
	my $log = $st->{log};
	my $events = txn_rows($st, 'claim',
		'SELECT event_id, project_id, kind, transaction_id, payload->>\'amount\' FROM credits.claim_events(3)')
	  or return;
	for my $e (@$events)
	{
		my ($event_id, $p, $kind, $tx, $amount) = @$e;
		if ($kind eq 'refund_requested')
		{
			# the provider refunds 80 %; the rest are declined and the hold released
			my $done = rand() < 0.8 ? 'refund_complete' : 'refund_fail';
			say($log, 'try', $done, $tx, $p, $amount);
			say($log, 'ack', $done, $tx, $p, $amount)
			  if $done eq 'refund_complete'
			  ? txn_ok($st, $done, 'SELECT credits.complete_refund(?, ?)', $p, $tx)
			  : txn_ok($st, $done, 'SELECT credits.fail_refund(?, ?, ?)', $p, $tx, 'provider_declined');
			return if $st->{gone};
		}
		elsif ($kind eq 'charge_requested')
		{
			if (rand() < 0.85)
			{
				say($log, 'try', 'complete', $tx, $p, $amount);
				my ($balance) = txn($st, 'complete', 'SELECT credits.complete_deposit(?, ?, ?)',
					$p, $tx, "https://invoices.example/$tag/$tx");
				say($log, 'ack', 'complete', $tx, $p, $amount, $balance) if defined $balance;
			}
			else
			{
				say($log, 'try', 'fail', $tx, $p, $amount);
				say($log, 'ack', 'fail', $tx, $p, $amount)
				  if txn_ok($st, 'fail', 'SELECT credits.fail_deposit(?, ?, ?)', $p, $tx, 'card_declined');
			}
			return if $st->{gone};
		}
		txn_ok($st, 'ack_event', 'SELECT credits.ack_event(?)', $event_id) or return;
	}
	return;
}

sub say
{
	my ($log, @f) = @_;
	print $log join("\t", map { $_ // '' } @f), "\n";
	return;
}

# Runs one statement in its own transaction at the shared billing time.  Returns its rows
# (array ref) after a successful COMMIT, or undef after an error, which is logged.
sub txn_rows
{
	my ($st, $op, $sql, @args) = @_;
	my $dbh = $st->{dbh};
	my $rows;
	# BEGIN and COMMIT as statements: DBD::Pg's commit() can report success when the
	# connection died after the last statement (seen in 070_crash), and a COMMIT that got no
	# answer must not count as acknowledged.
	my $ok = $dbh->do('BEGIN')
	  && $dbh->do("SELECT set_config('credits.clock', t::text, true) FROM public.soak_clock")
	  && defined($rows = $dbh->selectall_arrayref($sql, undef, @args))
	  && $dbh->do('COMMIT');
	return $rows if $ok;
	my ($state, $msg) = ($dbh->state, $dbh->errstr // '');
	$msg =~ s/\s+/ /g;
	if (!$dbh->ping)
	{
		$st->{gone} = 1;
		say($st->{log}, 'err', $op, 'gone', $msg);
		return undef;
	}
	$dbh->do('ROLLBACK');
	say($st->{log}, 'err', $op, $state, $msg);
	return undef;
}

sub txn
{
	my $rows = txn_rows(@_) or return;
	return @{ $rows->[0] // [] };
}

sub txn_ok
{
	return defined txn_rows(@_);
}

# Reads every client log of the directory: counts of acknowledged operations and errors, what
# each acknowledged operation was ({acked}{op}{key} = [fields]), and the operations in doubt
# ({doubt}{op}{key}): tried, and the connection died before the answer.  (A client runs one
# call at a time, so the line after a "try" is its answer.)
sub read_logs
{
	my ($dir) = @_;
	my %r = (ack => {}, err => {}, errors => [], acked => {}, doubt => {});
	for my $file (sort glob "$dir/round*-client*.log")
	{
		open my $fh, '<', $file or die "$file: $!";
		my $pending;
		while (my $line = <$fh>)
		{
			chomp $line;
			my ($kind, $op, @f) = split /\t/, $line, -1;
			if ($kind eq 'try')
			{
				$pending = [ $op, $f[0], \@f ];
			}
			elsif ($kind eq 'ack')
			{
				$r{ack}{$op}++;
				$r{acked}{$op}{ $f[0] } = \@f;
				undef $pending;
			}
			elsif ($kind eq 'err')
			{
				$r{err}{"$op $f[0]"}++;
				push @{ $r{errors} }, "$file: $op $f[0] $f[1]" unless $EXPECTED{ $f[0] } || $f[0] eq 'gone';
				$r{doubt}{ $pending->[0] }{ $pending->[1] } = $pending->[2] if $pending && $f[0] eq 'gone';
				undef $pending;
			}
		}
		# a client killed between its "try" and its answer
		$r{doubt}{ $pending->[0] }{ $pending->[1] } = $pending->[2] if $pending;
	}
	return \%r;
}
1;
