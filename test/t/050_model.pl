
# Model-based randomized test: random operation sequences over several projects, run against
# the extension and against test/perl/CreditsModel.pm (a reference model written from README.md,
# the user contract), compared after every step.  Credit lots are among the operations: grants
# (promotional lots with a priority, often an expires_at, often only for some kinds), refunds of
# unused paid credit (requested, completed, failed, refused); the periodic runs expire lots, the
# deduction draws each hour from the lots that may pay for it, and the zero-balance rule applies
# kind by kind.  The lots (remaining amount, state, expiry, priority, kinds) are compared in the
# full checks; a failure report shows each project's lots as the model and the database see them.
#
#   CREDITS_MODEL_SEED=N         replay a run (default: random; printed at the start and in
#                                every failure message)
#   CREDITS_MODEL_STEPS=N        number of steps (default 10000)
#   CREDITS_MODEL_FULL_EVERY=N   full comparison of every table every N steps (default 500)
#   CREDITS_MODEL_TRACE=1        print every operation
#   CREDITS_MODEL_DEBUG=1        also log the rows each operation created
#
# Every operation is also written, as the SQL that ran and (as a comment) its result, to
# tmp_check/log/050_model_ops.sql: psql -f replays it.  The same seed makes the same choices;
# only the ids of usage rows that one statement creates together may come out in another
# order (and, where an hour's rows meet an empty balance, the uncollected part with them).
use strict;
use warnings;

use DBI;
use Digest::MD5 qw(md5_hex);
use List::Util qw(sum0);
use PostgreSQL::Test::Utils;
use Test::More;
use CreditsNode;
use Time::HiRes ();

use CreditsModel;

my $seed       = $ENV{CREDITS_MODEL_SEED}       // int(rand(2**31));
my $steps      = $ENV{CREDITS_MODEL_STEPS}      // 10_000;
my $full_every = $ENV{CREDITS_MODEL_FULL_EVERY} // 500;
my $trace      = $ENV{CREDITS_MODEL_TRACE};
my $replay     = "CREDITS_MODEL_SEED=$seed CREDITS_MODEL_STEPS=$steps";
diag("model test: $replay");
srand($seed);

my $node = CreditsNode::start_node('model', <<'CONF');
synchronous_commit = off
full_page_writes = off
log_statement = none
CONF

my $dbh = DBI->connect('dbi:Pg:dbname=postgres;host=' . $node->host . ';port=' . $node->port,
	'', '', { AutoCommit => 1, RaiseError => 0, PrintError => 0 })
  or BAIL_OUT("cannot connect: $DBI::errstr");
$dbh->do("SET client_min_messages = warning");
$dbh->do("LISTEN credits_events");
# (JIT compiled balance_overview for 65 ms of its 67 while accounts had no statistics yet)
$dbh->do("SET jit = off");

my $ops_log_path = "$PostgreSQL::Test::Utils::log_path/050_model_ops.sql";
open(my $ops_log, '>', $ops_log_path) or die "cannot write $ops_log_path: $!";
$ops_log->autoflush(1);

# ----------------------------------------------------------------------------------------------
# SQL

sub micro { return "($_[0]::numeric * 1000000)::bigint"; }
sub usec  { return "(extract(epoch from $_[0]) * 1000000)::bigint"; }

my %Q = (
	step_state_body => 'SELECT \'tx\', transaction_id::text, project_id::text, type::text, status::text, '
	  . micro('amount') . '::text, ' . micro('uncollected') . '::text, coalesce(resource_id, lot_id::text), '
	  . usec('usage_hour') . '::text, method_id::text
	     FROM credits.transactions WHERE transaction_id > after_tid OR transaction_id = ANY (open_tids)
	   UNION ALL
	   SELECT \'ev\', event_id::text, project_id::text, kind, resource_id, transaction_id::text,
	          coalesce(payload->>\'type\', payload->>\'deposit_transaction_id\'), payload->>\'amount\',
	          payload->>\'method_id\', payload->>\'provider_ref\'
	     FROM credits.events WHERE event_id > after_event
	   UNION ALL
	   SELECT \'acct\', project_id::text, ' . micro('balance') . '::text, NULL, NULL, NULL, NULL, NULL, NULL, NULL
	     FROM credits.accounts
	   UNION ALL
	   SELECT \'ip\', project_id::text, resource_id, ' . usec('usage_hour') . '::text, ' . micro('amount') . '::text,
	          NULL, NULL, NULL, NULL, NULL
	     FROM credits.usage_in_progress WHERE project_id = ANY (projects)
	   UNION ALL
	   SELECT \'res\', concat_ws(\'|\', project_id, resource_id, kind, state, ' . micro('rate_per_hour') . ', '
	  . usec('state_since') . '), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
	     FROM credits.resource_overview
	    WHERE state IN (\'running\', \'available\', \'inaccessible\') OR state_since >= since',
	step_state => 'SELECT * FROM public.model_step_state($1, $2, $3, $4, $5)',
	all_tx => 'SELECT transaction_id, project_id, type::text, status::text, ' . micro('amount') . ', '
	  . micro('uncollected') . ', coalesce(resource_id, lot_id::text), ' . usec('usage_hour') . ', method_id
	     FROM credits.transactions',
	all_events => 'SELECT event_id, project_id, kind, resource_id, transaction_id,
	                      coalesce(payload->>\'type\', payload->>\'deposit_transaction_id\'),
	                      payload->>\'amount\', payload->>\'method_id\', payload->>\'provider_ref\', claims,
	                      CASE WHEN acked_at IS NULL THEN \'f\' ELSE \'t\' END
	                 FROM credits.events',
	overview => 'SELECT project_id, ' . micro('current_balance') . ', ' . micro('accumulating') . ', '
	  . micro('available_balance') . ', ' . micro('burn_rate') . ', hours_remaining::text,
	            CASE WHEN auto_recharge_enabled THEN \'t\' ELSE \'f\' END
	       FROM credits.balance_overview',
	in_progress_all => 'SELECT project_id, resource_id, ' . usec('usage_hour') . ', ' . micro('amount') . '
	                      FROM credits.usage_in_progress',
	resources => 'SELECT concat_ws(\'|\', project_id, resource_id, kind, state, ' . micro('rate_per_hour') . ', '
	  . usec('state_since') . ') FROM credits.resource_overview',
	methods => 'SELECT method_id, project_id, provider_ref, CASE WHEN is_default THEN \'t\' ELSE \'f\' END,
	                   CASE WHEN removed_at IS NULL THEN \'f\' ELSE \'t\' END
	              FROM credits.payment_methods',
	auto => 'SELECT project_id, CASE WHEN enabled THEN \'t\' ELSE \'f\' END, ' . micro('threshold') . ', '
	  . micro('amount') . ', method_id, CASE WHEN armed THEN \'t\' ELSE \'f\' END FROM credits.auto_recharge',
	accounts => 'SELECT project_id, ' . micro('balance') . ', CASE WHEN depleted THEN \'t\' ELSE \'f\' END
	               FROM credits.accounts',
	history => 'SELECT project_id, CASE WHEN status = \'accumulating\' THEN \'-\' ELSE transaction_id::text END, '
	  . usec('date') . ', type::text, ' . micro('amount') . ', status::text, ' . micro('uncollected') . ',
	                   coalesce(invoice_url, \'\')
	              FROM credits.transaction_history',
	# (usage named after its resource)
	usage_description => 'SELECT count(*) FROM credits.transactions
	                       WHERE type = \'usage\' AND position(resource_id IN description) = 0',
	available => 'SELECT project_id, ' . micro('credits.available_balance(project_id)') . ' FROM credits.accounts',
	verify => 'SELECT project_id, problem FROM credits.verify()',
	statement => 'SELECT line, coalesce(resource_id, \'\'), ' . micro('amount') . ' FROM credits.statement($1, $2, $3)',
	summarize => 'SELECT credits.run_usage_summaries($1)',
	lots => 'SELECT project_id, transaction_id, kind, ' . micro('amount') . ', ' . micro('remaining') . ', state,
	                priority, ' . usec('expires_at') . ', array_to_string(applies_to, \',\')
	           FROM credits.lots',
	spending => 'SELECT project_id, ' . micro('spent_today') . ', ' . micro('spent_this_month') . ',
	                    CASE WHEN budget_reached THEN \'t\' ELSE \'f\' END, alert_state
	               FROM credits.spending_overview',
);

# The step query as a function of the test database: planned once (a generic plan; planning
# usage_in_progress costs more than running it).
$dbh->do(<<SQL) or die $dbh->errstr;
CREATE FUNCTION public.model_step_state(after_tid bigint, open_tids bigint[], after_event bigint,
                                        projects bigint[], since timestamptz)
    RETURNS TABLE (k text, c1 text, c2 text, c3 text, c4 text, c5 text, c6 text, c7 text, c8 text, c9 text)
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS \$f\$
BEGIN
    RETURN QUERY $Q{step_state_body};
END \$f\$
SQL

my %qtime;

sub q_rows
{
	my ($name, @args) = @_;
	my $t   = Time::HiRes::time();
	my $sth = $dbh->prepare_cached($Q{$name});
	$sth->execute(@args) or die "query $name failed: " . $dbh->errstr;
	my $rows = $sth->fetchall_arrayref;
	$qtime{$name} += Time::HiRes::time() - $t;
	return $rows;
}

sub lit { return $dbh->quote($_[0]); }
sub num { return defined $_[0] ? $_[0] : 'NULL'; }
sub cr  { return defined $_[0] ? lit(CreditsModel::fmt_credits($_[0])) : 'NULL'; }
sub ts  { return lit(CreditsModel::fmt_ts($_[0])); }
sub boolean { return defined $_[0] ? ($_[0] ? 'true' : 'false') : 'NULL'; }
sub secs { return defined $_[0] ? "'$_[0] seconds'::interval" : 'NULL'; }

sub arr
{
	my ($type, $f, $l) = @_;
	return 'NULL' unless $l;
	return 'ARRAY[' . join(', ', map { $f->($_) } @$l) . "]::$type\[]";
}

# The SQL of one operation.
sub op_sql
{
	my ($op, $call_only) = @_;
	my $o  = $op->{op};
	return 'SET credits.clock = ' . ts($op->{to}) if $o eq 'set_clock';
	return 'SET credits.minimum_deposit = ' . cr($op->{amount}) if $o eq 'set_minimum_deposit';
	return "SELECT credits.open_account(" . num($op->{pid}) . ")" if $o eq 'open_account';
	return sprintf('SELECT credits.add_payment_method(%s, %s, %s, %s)',
		num($op->{pid}), lit($op->{ref}), lit($op->{label}), boolean($op->{make_default}))
	  if $o eq 'add_payment_method';
	return sprintf("SELECT credits.$o(%s, %s)", num($op->{pid}), num($op->{mid}))
	  if $o eq 'set_default_payment_method' || $o eq 'remove_payment_method';
	return sprintf('SELECT credits.add_credits(%s, %s, %s, %s)', num($op->{pid}), cr($op->{amount}),
		num($op->{mid}), lit($op->{key}))
	  if $o eq 'add_credits';
	return sprintf('SELECT %s', micro(sprintf('credits.complete_deposit(%s, %s, %s)',
		num($op->{pid}), num($op->{tid}), lit($op->{text}))))
	  if $o eq 'complete_deposit';
	return sprintf('SELECT credits.fail_deposit(%s, %s, %s)', num($op->{pid}), num($op->{tid}), lit($op->{text}))
	  if $o eq 'fail_deposit';
	return sprintf('SELECT credits.grant_credits(%s, %s, %s, %s, %s, %s, %s)', num($op->{pid}), cr($op->{amount}),
		defined $op->{expires} ? ts($op->{expires}) : 'NULL', num($op->{priority}), arr('text', \&lit, $op->{applies_to}),
		lit($op->{description}), lit($op->{key}))
	  if $o eq 'grant_credits';
	return sprintf('SELECT credits.refund_deposit(%s, %s, %s, %s, %s)', num($op->{pid}), num($op->{tid}),
		cr($op->{amount}), lit($op->{text}), lit($op->{key}))
	  if $o eq 'refund_deposit';
	return sprintf('SELECT %s', micro(sprintf('credits.complete_refund(%s, %s)', num($op->{pid}), num($op->{tid}))))
	  if $o eq 'complete_refund';
	return sprintf('SELECT credits.fail_refund(%s, %s, %s)', num($op->{pid}), num($op->{tid}), lit($op->{text}))
	  if $o eq 'fail_refund';
	return sprintf("SELECT credits.$o(%s, %s, %s)", num($op->{pid}), lit($op->{rid}), cr($op->{rate}))
	  if $o eq 'start_instance' || $o eq 'attach_volume';
	return sprintf("SELECT credits.$o(%s, %s)", num($op->{pid}), lit($op->{rid}))
	  if $o eq 'stop_instance' || $o eq 'delete_volume';
	if ($o eq 'record_usage')
	{
		my $call = sprintf('SELECT credits.record_usage(%s, %s, %s, %s)',
			num($op->{pid}), lit($op->{rid}), cr($op->{amount}), lit($op->{key}));
		return $call if $call_only || !defined $op->{at};
		return "SET credits.clock = " . ts($op->{at}) . ";\n$call;\nSET credits.clock = " . ts($op->{back});
	}
	return sprintf('SELECT credits.record_usage_batch(%s, %s, %s, %s)',
		arr('bigint', \&num, $op->{pids}), arr('text', \&lit, $op->{rids}),
		arr('credits.credits', \&cr, $op->{amounts}), arr('text', \&lit, $op->{keys}))
	  if $o eq 'record_usage_batch';
	return "SELECT credits.$o()" if $o eq 'run_hourly_deductions' || $o eq 'run_balance_checks';
	return sprintf('SELECT credits.configure_auto_recharge(%s, %s, %s, %s, %s)', num($op->{pid}),
		boolean($op->{enabled}), cr($op->{threshold}), cr($op->{amount}), num($op->{mid}))
	  if $o eq 'configure_auto_recharge';
	return sprintf('SELECT credits.configure_limits(%s, max_burn_rate => %s, min_runway => %s, '
		  . 'daily_budget => %s, monthly_budget => %s, on_budget => %s)', num($op->{pid}), cr($op->{max_burn}),
		secs($op->{min_runway}), cr($op->{daily}), cr($op->{monthly}), lit($op->{on_budget}))
	  if $o eq 'configure_limits';
	return sprintf('SELECT credits.configure_alerts(%s, below_balance => %s, below_runway => %s)',
		num($op->{pid}), cr($op->{below_balance}), secs($op->{below_runway}))
	  if $o eq 'configure_alerts';
	return sprintf('SELECT event_id FROM credits.claim_events(%s) ORDER BY event_id', num($op->{n}))
	  if $o eq 'claim_events';
	return sprintf('SELECT credits.ack_event(%s)', num($op->{id})) if $o eq 'ack_event';
	die "no SQL for $o";
}

# Runs one operation: { rows } or { err, msg }.  A late call runs with the clock set back.
sub run_op
{
	my ($op, $clock) = @_;
	$op->{back} = $clock if defined $op->{at};
	my $sql = op_sql($op);
	print $ops_log "$sql;\n";
	if (defined $op->{at})
	{
		$dbh->do('SET credits.clock = ' . ts($op->{at})) or die $dbh->errstr;
		my $r = run_sql(op_sql($op, 1));
		$dbh->do('SET credits.clock = ' . ts($clock)) or die $dbh->errstr;
		return $r;
	}
	return run_sql($sql);
}

sub run_sql
{
	my $sql  = shift;
	my $t    = Time::HiRes::time();
	my $rows = $dbh->selectall_arrayref($sql);
	$qtime{operations} += Time::HiRes::time() - $t;
	return { err => $dbh->state, msg => $dbh->errstr } unless $rows;
	return { rows => $rows };
}

# ----------------------------------------------------------------------------------------------
# comparison

sub diff_lines
{
	my ($what, $mine, $theirs) = @_;
	my %c;
	$c{$_}++ for @$mine;
	$c{$_}-- for @$theirs;
	my @only_m = map { ($_) x $c{$_} } grep { $c{$_} > 0 } sort keys %c;
	my @only_t = map { ($_) x -$c{$_} } grep { $c{$_} < 0 } sort keys %c;
	return undef unless @only_m || @only_t;
	my $n = 25;
	splice(@only_m, $n) if @only_m > $n;
	splice(@only_t, $n) if @only_t > $n;
	return "$what differ\n  only in the model:\n" . join('', map { "    $_\n" } @only_m)
	  . "  only in the database:\n" . join('', map { "    $_\n" } @only_t);
}

sub db_event_key
{
	my ($id, $pid, $kind, $rid, $tid, $type, $amount, $mid, $ref) = @_;
	my $detail = $kind eq 'charge_requested'
	  ? join('/', $type // '', CreditsModel::parse_credits($amount // '0'), $mid // '', $ref // '')
	  : $kind eq 'refund_requested'    # (type: the deposit refunded)
	  ? join('/', CreditsModel::parse_credits($amount // '0'), $type // '', $mid // '', $ref // '')
	  : '';
	return join('|', $pid, $kind, $rid // '', $tid // '', $detail);
}

sub tx_line { return join('|', map { $_ // '' } @{ $_[0] }); }

sub hours_remaining_ok
{
	my ($avail, $burn, $db) = @_;
	return !defined $db if $burn <= 0;
	return 0 unless defined $db && $db =~ /^(\d+)\.(\d\d)$/;
	my $got = $1 * 100 + $2;
	my $x = $avail * 100;
	my $q = int($x / $burn);
	$q++ while ($q + 1) * $burn <= $x;
	$q-- while $q * $burn > $x;
	my $r = $x - $q * $burn;    # exact value is q + r/burn hundredths
	my $want = 2 * $r >= $burn ? $q + 1 : $q;
	return 1 if $got == $want;
	# a quotient that is a hair from a rounding boundary may be rounded either way by numeric division
	return abs(2 * $r - $burn) * 1_000_000_000 < $burn && abs($got - $want) == 1;
}

my (%usage_tid, %expiry_tid, %open_tids, $max_tid, $max_event, $db_clock, $model, $first_clock);
$max_tid   = 0;
$max_event = 0;

# Everything the operation may have changed, plus the cheap summaries; undef when all agrees.
sub compare_step
{
	my ($op, $exp, $got, $state, $with_overview) = @_;
	my $changed = $state->{tx};
	# the call's own result
	if ($exp->{err} || $got->{err})
	{
		return "expected error $exp->{err} ($exp->{why}), got success" unless $got->{err};
		return "expected success, got error $got->{err}: $got->{msg}" unless $exp->{err};
		return "expected error $exp->{err} ($exp->{why}), got $got->{err}: $got->{msg}"
		  if $exp->{err} ne $got->{err};
	}
	else
	{
		my %valued = map { $_ => 1 } qw(add_payment_method add_credits grant_credits complete_deposit record_usage_batch
		  refund_deposit complete_refund
		  run_hourly_deductions run_balance_checks claim_events);
		if ($valued{ $op->{op} })
		{
			my $v = $op->{op} eq 'claim_events'
			  ? join(',', map { $_->[0] } @{ $got->{rows} })
			  : $got->{rows}[0][0];
			my $w = $op->{op} eq 'claim_events' ? join(',', @{ $exp->{value} }) : $exp->{value};
			return "returned " . ($v // 'NULL') . ", expected " . ($w // 'NULL')
			  . ($exp->{detail} ? " ($exp->{detail})" : '')
			  if ($v // 'NULL') ne ($w // 'NULL');
		}
	}

	# transactions that changed: each one as the model has it
	my %ip_keys;
	for my $pid ($model->projects)
	{
		$ip_keys{$pid} = $model->in_progress($pid);
	}
	my %seen;
	for my $r (@$changed)
	{
		my ($tid, $pid, $type, $status, $amount, $unc, $rid, $h, $mid) = @$r;
		$seen{$tid} = 1;
		if ($type eq 'usage' && $status eq 'accumulating')
		{
			my $m = $model->{rows}{$pid}{$rid}{$h};
			return "transaction $tid (usage of $pid/$rid in hour " . CreditsModel::fmt_ts($h)
			  . ") is accumulating in the database, but not in the model"
			  . ($m ? " (model: $m->{status})" : '')
			  unless $ip_keys{$pid} && $ip_keys{$pid}{"$rid\0$h"} && (!$m || $m->{status} eq 'accumulating');
			next;
		}
		my $mine;
		if ($type eq 'usage')
		{
			my $m = $model->{rows}{$pid}{$rid}{$h};
			$mine = $m && $m->{status} eq 'completed' ? CreditsModel::usage_line($m) : 'usage row ' . ($m ? $m->{status} : 'missing');
		}
		else
		{
			my $t = $model->{txns}{$tid};
			$mine = $t ? CreditsModel::deposit_line($t) : 'missing';
		}
		my $theirs = tx_line($r);
		return "transaction $tid differs\n  model:    $mine\n  database: $theirs" if $mine ne $theirs;
	}
	for my $tid (sort keys %{ $model->{touched} })
	{
		return "the model changed transaction $tid; the database has no such change" unless $seen{$tid};
	}

	# events queued by this operation
	my @ev = map { [ $_->[0], db_event_key(@$_) ] } @{ $state->{ev} };
	my $e = $model->adopt_events(\@ev);
	return $e if $e;
	# events are announced with NOTIFY credits_events (in the transaction that queued them)
	my $notified = 0;
	while (my $n = $dbh->pg_notifies) { $notified++ if $n->[0] eq 'credits_events'; }
	return "the operation queued " . scalar(@ev) . " events but sent $notified notifications on credits_events"
	  if !@ev != !$notified;
	for (@ev) { $max_event = $_->[0] if $_->[0] > $max_event; }

	# balances, usage in progress and resources every step; the whole balance_overview every
	# fifth step (the slowest query: accumulating and burn rate per project)
	my @mine   = map { join('|', $_, $model->{acct}{$_}{balance}) } $model->projects;
	my @theirs = map { join('|', @$_[ 0, 1 ]) } @{ $state->{acct} };
	$e = diff_lines('balances (project|balance)', [ sort @mine ], [ sort @theirs ]);
	return $e if $e;
	$e = compare_in_progress_and_resources(\%ip_keys, $state);
	return $e if $e;
	return $with_overview ? compare_overview() : undef;
}

sub compare_overview
{
	my (@mine, @theirs);
	for my $r (@{ q_rows('overview') })
	{
		my ($pid, $bal, $acc, $avail, $burn, $hours, $auto) = @$r;
		return "the database has a project $pid that the model has not" unless $model->{acct}{$pid};
		my $mavail = $model->available($pid);
		my $mburn  = $model->burn_rate($pid);
		$hours = 'ok' if hours_remaining_ok($mavail, $mburn, $hours);
		push @theirs, join('|', $pid, $bal, $acc, $avail, $burn, $hours // 'NULL', $auto);
	}
	for my $pid ($model->projects)
	{
		my $c = $model->{auto}{$pid};
		push @mine, join('|', $pid, $model->{acct}{$pid}{balance}, scalar($model->accumulating($pid)),
			$model->available($pid), $model->burn_rate($pid), 'ok', $c && $c->{enabled} ? 't' : 'f');
	}
	return diff_lines('balance_overview (project|balance|accumulating|available|burn_rate|hours_remaining|auto)',
		[ sort @mine ], [ sort @theirs ]);
}

sub compare_in_progress_and_resources
{
	my ($ip_keys, $state) = @_;
	my (@mine, @theirs, $e);
	my %ip_keys = %$ip_keys;
	# usage in progress, per (resource, hour)
	for my $pid (keys %ip_keys)
	{
		push @mine, map { join('|', $pid, $_->{rid}, $_->{h}, -$_->{amount}) } values %{ $ip_keys{$pid} };
	}
	@theirs = map { join('|', @$_[ 0 .. 3 ]) } @{ $state->{ip} };
	$e = diff_lines('usage_in_progress (project|resource|hour|amount)', [ sort @mine ], [ sort @theirs ]);
	return $e if $e;

	# resources: those running, available or inaccessible, and those whose state changed now
	# (the others change only by changing state; the full checks see all)
	return diff_lines('resources (project|resource|kind|state|rate|state_since)',
		[ $model->resource_lines($db_clock) ],
		[ sort map { $_->[0] } @{ $state->{res} } ]);
}

# Every table, all rows; undef when all agrees.
# Two periods per project for the statement check, spread over the model's run so far by the
# project and the number of checks done (no draw from the generator's random numbers): one of
# up to a day, one of up to a week.
my ($statement_checks, $summed_days) = (0, 0);
sub statement_periods
{
	my $p     = shift;
	my $first = $first_clock - 3_600_000_000;
	my $span  = $db_clock - $first + 3_600_000_000;
	my $k     = $statement_checks * 7919 + $p * 104_729;
	my $from1 = $first + ($k * 7_777_777_777) % $span;
	my $from2 = $first + ($k * 3_333_333_331) % $span;
	return ([ $from1, $from1 + 1 + ($k * 9_999_991) % 86_400_000_000 ],
		[ $from2, $from2 + 1 + ($k * 99_999_989) % 604_800_000_000 ]);
}

# The database's statements of the periods given per project, after
# credits.run_usage_summaries() has summed a few more days (so that the periods read some days
# from the sums and the rest from the usage rows, as the hourly job leaves them).
sub statements_of_db
{
	my $periods = shift;
	$summed_days += q_rows('summarize', 1 + $statement_checks % 5)->[0][0];
	my @l;
	for my $p (sort { $a <=> $b } keys %$periods)
	{
		for my $period (@{ $periods->{$p} })
		{
			push @l, map { join('|', $p, $period->[0], @$_) }
			  @{ q_rows('statement', $p, map { CreditsModel::fmt_ts($_) } @$period) };
		}
	}
	return @l;
}

sub compare_all
{
	my $e = compare_overview();
	return $e if $e;
	my $history = q_rows('history');
	my %periods = map { $_ => [ statement_periods($_) ] } $model->projects;
	$statement_checks++;
	my @checks = (
		[ 'transactions (tid|project|type|status|amount|uncollected|resource|hour|method)',
			[ $model->final_transaction_lines ],
			[ map { tx_line($_) } grep { $_->[3] ne 'accumulating' } @{ q_rows('all_tx') } ] ],
		[ 'transaction_history (project|tid|date|type|amount|status|uncollected|invoice)',
			[ $model->history_lines ], [ map { tx_line($_) } @$history ] ],
		[ 'events (id|project|kind|resource|tid|detail|claims|acked)', [ $model->event_lines ],
			[ map { join('|', $_->[0], db_event_key(@$_[ 0 .. 8 ]), $_->[9], $_->[10]) } @{ q_rows('all_events') } ] ],
		[ 'payment methods (id|project|ref|default|removed)', [ $model->method_lines ],
			[ map { tx_line($_) } @{ q_rows('methods') } ] ],
		[ 'auto-recharge settings (project|enabled|threshold|amount|method|armed)', [ $model->auto_lines ],
			[ map { tx_line($_) } @{ q_rows('auto') } ] ],
		[ 'accounts (project|balance|cut off)',
			[ map { join('|', $_, $model->{acct}{$_}{balance}, $model->{acct}{$_}{depleted} ? 't' : 'f') } $model->projects ],
			[ map { tx_line($_) } @{ q_rows('accounts') } ] ],
		[ 'resources (project|resource|kind|state|rate|state_since)', [ $model->resource_lines ],
			[ map { $_->[0] } @{ q_rows('resources') } ] ],
		[ 'usage_in_progress (project|resource|hour|amount)',
			[ map { my $p = $_; map { join('|', $p, $_->{rid}, $_->{h}, -$_->{amount}) } values %{ $model->in_progress($p) } } $model->projects ],
			[ map { join('|', @$_) } @{ q_rows('in_progress_all') } ] ],
		[ 'available_balance() (project|available)', [ map { join('|', $_, $model->available($_)) } $model->projects ],
			[ map { tx_line($_) } @{ q_rows('available') } ] ],
		# (the history adds up: its completed amounts to the balance, with the accumulating ones
		# to what the preview leaves of the balance: the available balance when the lots are all
		# alike)
		[ 'transaction_history amounts (project|completed|completed and accumulating)',
			[ map { join('|', $_, $model->{acct}{$_}{balance}, $model->preview_left($_)) } $model->projects ],
			[ map { my $p = $_; my @h = grep { $_->[0] == $p } @$history;
					join('|', $p, sum0(map { $_->[4] } grep { $_->[5] eq 'completed' } @h), sum0(map { $_->[4] } grep { $_->[5] ne 'pending' && $_->[5] ne 'failed' } @h)) }
				$model->projects ] ],
		[ 'transaction_history rows out of order (newest first)', [ 0 ], [ scalar(grep { $history->[$_][2] > $history->[ $_ - 1 ][2] } 1 .. $#$history) ] ],
		[ 'usage transactions whose description does not name the resource', [ 0 ],
			[ q_rows('usage_description')->[0][0] ] ],
		[ 'verify()', [], [ map { tx_line($_) } @{ q_rows('verify') } ] ],
		[ 'statements of two periods per project (project|from|line|resource|amount), some of their days summed',
			[ map { my $p = $_; map { $model->statement_lines($p, @$_) } @{ $periods{$p} } } $model->projects ],
			[ statements_of_db(\%periods) ] ],
		[ 'lots (project|transaction|kind|amount|remaining|state)', [ $model->lot_lines ],
			[ map { tx_line($_) } @{ q_rows('lots') } ] ],
		[ 'spending_overview (project|spent_today|spent_this_month|budget_reached|alert_state)',
			[ $model->spending_lines ], [ map { tx_line($_) } @{ q_rows('spending') } ] ],
	);
	for my $c (@checks)
	{
		$e = diff_lines($c->[0], [ sort @{ $c->[1] } ], [ sort @{ $c->[2] } ]);
		return $e if $e;
	}
	return undef;
}

# ----------------------------------------------------------------------------------------------
# the run

my $start = (1_767_225_600 + int(rand(86_400))) * 1_000_000;    # 2026-01-01 plus up to a day
$first_clock = $start;
$model = CreditsModel->new(now => $start);
my $gen = CreditsModel::Gen->new(model => $model);
$db_clock = $start;
$dbh->do('SET credits.clock = ' . ts($start)) or die $dbh->errstr;
print $ops_log "SET credits.clock = " . ts($start) . ";\n";

my (@recent, %stats);
my $t0     = Time::HiRes::time();
my $failed = 0;
my $block  = 1;

sub failure
{
	my ($step, $op, $msg) = @_;
	my $sql = op_sql($op);
	fail("step $step of $replay: $op->{op} disagrees with the model");
	$msg .= "\nthe model's lots (after the step):\n" . join('', map { '  ' . $model->describe_lots($_) } $model->projects);
	my $st = $dbh->selectall_arrayref('SELECT project_id, transaction_id, ' . micro('left_over')
		  . ' FROM credits._lot_standing ORDER BY project_id') // [];
	$msg .= "the database's lots, what each has left after the accrued usage (project|lot|left):\n"
	  . join('', map { '  ' . join('|', @$_) . "\n" } @$st);
	diag("$replay\nstep $step: $sql\n$msg\nthe last operations (all of them are in $ops_log_path):\n"
		  . join('', map { "  $_\n" } @recent[ ($#recent > 30 ? $#recent - 30 : 0) .. $#recent ]));
	$failed = 1;
}

for my $step (1 .. $steps)
{
	my $t   = Time::HiRes::time();
	my $op  = $gen->next_op;
	$qtime{'perl: generator'} += Time::HiRes::time() - $t;
	my $got = run_op($op, $db_clock);
	print $ops_log '-- step ', $step, ': ',
	  ($got->{err} ? "error $got->{err}" : join(',', map { $_->[0] // 'NULL' } @{ $got->{rows} })), "\n";
	$db_clock = $op->{to} if $op->{op} eq 'set_clock' && !$got->{err};
	push @recent, "$step: " . op_sql($op) . ($got->{err} ? "  -- $got->{err}" : '');
	shift @recent if @recent > 60;
	diag($recent[-1]) if $trace;
	$stats{ $op->{op} . ($got->{err} ? " ($got->{err})" : '') }++;

	# what changed in the ledger; its ids are what the model's new rows are called
	# (a row can change only while it is pending or accumulating: the ones that were at the
	# last step, and the new ones; the full checks look at all of them)
	my %state = (tx => [], ev => [], acct => [], ip => [], res => []);
	for my $r (@{ q_rows('step_state', $max_tid, [ sort { $a <=> $b } keys %open_tids ], $max_event,
				[ $model->projects ], CreditsModel::fmt_ts($db_clock)) })
	{
		my $tag = shift @$r;
		push @{ $state{$tag} }, $r;
	}
	my $changed  = $state{tx};
	my $prev_max = $max_tid;
	my %new_ar;
	%open_tids = ();
	for my $r (@$changed)
	{
		my ($tid, $pid, $type, $status, undef, undef, $rid, $h) = @$r;
		$open_tids{$tid} = 1 if $status eq 'pending' || $status eq 'accumulating';
		$usage_tid{"$pid\0$rid\0$h"} = $tid if $type eq 'usage';
		$expiry_tid{"$pid\0$rid"} = $tid if $type eq 'expiry';    # (rid: the lot expired)
		$new_ar{$pid} = $tid if $type eq 'auto_recharge' && $status eq 'pending' && $tid > $prev_max;
		$max_tid = $tid if $tid > $max_tid;
	}
	print $ops_log '-- new rows: ',
	  join(' ', map { join(':', @$_[ 0 .. 3, 6, 7 ]) } sort { $a->[0] <=> $b->[0] } grep { $_->[0] > $prev_max } @$changed), "\n"
	  if $ENV{CREDITS_MODEL_DEBUG};
	my $lookup = sub {
		my ($what, $pid, $rid, $h) = @_;
		return $what eq 'usage' ? $usage_tid{"$pid\0$rid\0$h"} : $what eq 'expiry' ? $expiry_tid{"$pid\0$rid"} : $new_ar{$pid};
	};
	my $ret = $got->{rows} && @{ $got->{rows} } ? $got->{rows}[0][0] : undef;
	$t = Time::HiRes::time();
	my $exp = eval { $model->apply($op, $ret, $lookup) };
	$qtime{'perl: model'} += Time::HiRes::time() - $t;
	if (!$exp)
	{
		failure($step, $op, "the model died: $@");
		last;
	}
	$t = Time::HiRes::time();
	my $msg = compare_step($op, $exp, $got, \%state, $step % 5 == 0);
	$qtime{'comparing'} += Time::HiRes::time() - $t;
	$t = Time::HiRes::time();
	$msg //= compare_all() if $step % $full_every == 0 || $step == $steps;
	$qtime{'full checks'} += Time::HiRes::time() - $t;
	if ($msg)
	{
		failure($step, $op, $msg);
		last;
	}
	if ($step % $full_every == 0 || $step == $steps)
	{
		pass(sprintf('steps %d..%d agree with the model (%.0fs)', $block, $step, Time::HiRes::time() - $t0));
		$block = $step + 1;
	}
}

my $s = $model->{stats} // {};
diag(sprintf("%s: %.0fs; clock advanced %.1f hours; operations: %s", $replay, Time::HiRes::time() - $t0,
		($db_clock - $start) / 3.6e9, join(', ', map { "$_ $stats{$_}" } sort keys %stats)));
diag('seconds spent in: ' . join(', ', map { sprintf('%s %.1f', $_, $qtime{$_}) } sort keys %qtime));
diag('model: ' . join(', ', map { "$_ $s->{$_}" } sort keys %$s)) if %$s;
diag("statements: $statement_checks checks of two periods per project; project-days summed for them: $summed_days");
ok(!@{ q_rows('verify') }, 'verify() finds no problem at the end') unless $failed;

$dbh->disconnect;
$node->stop;
done_testing();
