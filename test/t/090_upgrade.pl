# Upgrading in place: a database made with the frozen 0.1.0 script, filled through the API as a
# user would, then ALTER EXTENSION credits UPDATE.
#
#  * The version is written once: META.json agrees with credits.control, and the frozen 0.1.0
#    script is byte for byte what 0.1.0 installed.
#  * The upgraded database's objects equal those of a fresh install of the newest version
#    (test/sql/extension_objects.sql: definitions, ACLs, comments, column order, enum labels,
#    operators, casts, config-dump registrations, roles), on two servers so that the roles'
#    comments are compared too.
#  * Every row the 0.1.0 database held is kept, column by column.  The one rewrite is the amount
#    of usage transactions (0.1.0 stored the whole charge; 0.2.0 stores what the balance gave),
#    and it is checked against a twin: a fresh install of the newest version that went through
#    the same API calls must hold exactly the same rows as the upgraded database, before and
#    after both bill on.
#  * verify() is clean, and both bill on identically.
#  * The new C library under a database still at 0.1.0: every call either behaves as in the
#    upgraded database (same balances afterwards) or is refused with an error naming
#    ALTER EXTENSION credits UPDATE and writes nothing.
use strict;
use warnings;

use Digest::SHA;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $frozen_sha256 = 'd3e48f06bc8930eb913c8ab48a7d0fbf849d9bfe0f36f68046e46d65ae918aaa';

# ----------------------------------------------------------------------------------------------
# The version, written once.
my ($version) = slurp_file('credits.control') =~ /^default_version\s*=\s*'([^']+)'/m;
ok($version, "credits.control names default_version ($version)");
my $meta = decode_json(slurp_file('META.json'));
is($meta->{version}, $version, 'META.json version is default_version');
is($meta->{provides}{credits}{version}, $version, 'META.json provides.credits.version is default_version');
is(Digest::SHA->new(256)->addfile('sql/credits--0.1.0.sql')->hexdigest, $frozen_sha256,
	'sql/credits--0.1.0.sql is the frozen 0.1.0 install script');
ok(-f "sql/credits--0.1.0--$version.sql", "an upgrade script leads from 0.1.0 to $version")
  unless $version eq '0.1.0';

# ----------------------------------------------------------------------------------------------
# Two servers: "old" holds the database to upgrade and one left at 0.1.0; "new" holds the twin.
my $conf = <<'CONF';
timezone = 'UTC'
lc_messages = 'C'
fsync = off
CONF
my %node;
for my $name ('old', 'new')
{
	$node{$name} = PostgreSQL::Test::Cluster->new("upgrade_$name");
	$node{$name}->init;
	$node{$name}->append_conf('postgresql.conf', $conf);
	$node{$name}->start;
}
my @db = (['old', 'upgraded'], ['old', 'stale'], ['new', 'twin']);
for my $d (@db)
{
	my ($n, $name) = @$d;
	$node{$n}->safe_psql('postgres', "CREATE DATABASE $name");
	$node{$n}->safe_psql($name,
		$name eq 'twin' ? 'CREATE EXTENSION credits' : "CREATE EXTENSION credits VERSION '0.1.0'");
}
sub sql { my ($n, $d, $q) = @_; return $node{$n}->safe_psql($d, $q); }

is(sql('old', 'upgraded', "SELECT extversion FROM pg_extension WHERE extname = 'credits'"), '0.1.0',
	'installed from the frozen 0.1.0 script');

# ----------------------------------------------------------------------------------------------
# A history made through the 0.1.0 API, run the same on the 0.1.0 databases and on the twin.
my $history = <<'SQL';
SET client_min_messages = warning;
SET credits.clock = '2026-03-08 08:00+00';
SELECT credits.open_account(p) FROM generate_series(1, 6) AS p;
SELECT credits.add_payment_method(p, 'pm_' || p, 'Visa ' || p) FROM generate_series(1, 6) AS p;
SELECT credits.add_payment_method(1, 'pm_1_old', 'Mastercard', make_default => false);
SELECT credits.remove_payment_method(1, m.method_id) FROM credits.payment_methods m WHERE m.provider_ref = 'pm_1_old';
-- deposits completed (with a key and an invoice), failed, pending
SELECT credits.complete_deposit(1, credits.add_credits(1, '100.00', idempotency_key => 'order-1'), 'https://invoices.example/1');
SELECT credits.fail_deposit(1, credits.add_credits(1, '50.00'), 'card_declined');
SELECT credits.add_credits(1, '20.00', idempotency_key => 'order-pending');
SELECT credits.complete_deposit(2, credits.add_credits(2, '10.00'));
SELECT credits.complete_deposit(3, credits.add_credits(3, '30.00'));
SELECT credits.complete_deposit(5, credits.add_credits(5, '6.00'));
SELECT credits.complete_deposit(6, credits.add_credits(6, '40.00'));
-- instances and volumes: running, stopped, terminated (project 2 runs out), locked
SELECT credits.start_instance(1, 'gpu-1', '3.00');
SELECT credits.start_instance(1, 'gpu-1b', '1.25');
SELECT credits.attach_volume(1, 'vol-1', '0.10');
SELECT credits.start_instance(2, 'gpu-2', '6.00');
SELECT credits.attach_volume(2, 'vol-2', '0.20');
SELECT credits.start_instance(5, 'gpu-5', '9.00');
SELECT credits.attach_volume(5, 'vol-5', '0.05');
SELECT credits.start_instance(6, 'gpu-6', '0.50');
-- auto-recharge: one that will be requested, one that will fail (and is disarmed)
SELECT credits.configure_auto_recharge(3, true, '50.00', '25.00');
SELECT credits.configure_auto_recharge(6, true, '45.00', '10.00');
SET credits.clock = '2026-03-08 08:30+00';
-- API usage: keyed and plain, on a funded project and on one never funded (4)
SELECT credits.record_usage(1, 'api:chat', '0.25', 'req-1');
SELECT credits.record_usage(1, 'api:chat', '0.50', 'req-2');
SELECT credits.record_usage(1, 'api:embed', '0.004405');
SELECT credits.record_usage(4, 'api:chat', '0.004405');
SELECT credits.record_usage_batch(ARRAY[1, 4, 6], ARRAY['api:chat', 'api:chat', 'api:img'],
                                  ARRAY['0.01', '0.02', '0.03']::credits.credits[]);
-- the balance check: folds the API usage, cuts project 5 off (its accrued usage has used up
-- its balance), requests the auto-recharges of projects 3 and 6
SET credits.clock = '2026-03-08 08:50+00';
SELECT credits.run_balance_checks();
SELECT credits.fail_deposit(6, t.transaction_id, 'card_declined')
  FROM credits.transactions t WHERE t.project_id = 6 AND t.type = 'auto_recharge';
SET credits.clock = '2026-03-08 09:30+00';
SELECT credits.stop_instance(1, 'gpu-1');
SELECT credits.record_usage(1, 'api:chat', '0.75', 'req-3');
-- hours 08:00 and 09:00 deducted: project 2 runs out (instance terminated, volume locked)
SET credits.clock = '2026-03-08 10:00:05+00';
SELECT credits.run_hourly_deductions();
-- API usage not yet folded, and events: one acknowledged, the rest unclaimed
-- API usage folded and not deducted (hour 10), and recorded after the fold
SET credits.clock = '2026-03-08 10:10+00';
SELECT credits.record_usage(1, 'api:chat', '0.40');
SELECT credits.record_usage(4, 'api:chat', '0.01');
SET credits.clock = '2026-03-08 10:15+00';
SELECT credits.run_balance_checks();
SET credits.clock = '2026-03-08 10:20+00';
SELECT credits.record_usage(1, 'api:chat', '0.20');
SELECT credits.record_usage(4, 'api:embed', '0.02');
SELECT credits.ack_event(e.event_id) FROM credits.claim_events(1) AS e;
SQL
sql(@$_, $history) for @db;

# What the 0.1.0 database holds, table by table, saved beside it in schema public.
my @old_tables = split /\n/, sql('old', 'upgraded', <<'SQL');
SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'r'
 ORDER BY 1
SQL
ok(scalar(@old_tables) >= 9, '0.1.0 has its tables: ' . join(', ', @old_tables));
sql('old', 'upgraded', join '', map { "CREATE TABLE public.old_$_ AS SELECT * FROM credits.$_;\n" } @old_tables);
my $old_sequences = sql('old', 'upgraded', <<'SQL');
SELECT string_agg(format('%s=%s', c.relname, s.last_value), ' ' ORDER BY c.relname)
  FROM pg_class c, LATERAL (SELECT pg_sequence_last_value(c.oid) AS last_value) s
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'S'
SQL

# ----------------------------------------------------------------------------------------------
# The upgrade.
sql('old', 'upgraded', 'ALTER EXTENSION credits UPDATE');
is(sql('old', 'upgraded', "SELECT extversion FROM pg_extension WHERE extname = 'credits'"), $version,
	"ALTER EXTENSION credits UPDATE reaches $version");

# The objects, compared with the fresh install's line by line.
my $describe = slurp_file('test/sql/extension_objects.sql');
my @upgraded = split /\n/, sql('old', 'upgraded', $describe);
my @fresh    = split /\n/, sql('new', 'twin', $describe);
cmp_ok(scalar(@fresh), '>', 500, 'the object description has substance (' . scalar(@fresh) . ' lines)');
my @extra = @{ difference(\@upgraded, \@fresh) };
ok(!@extra, 'nothing in the upgraded database that a fresh install lacks')
  or diag("upgraded only:\n" . join("\n", @extra));
my @lacking = @{ difference(\@fresh, \@upgraded) };
ok(!@lacking, 'nothing in a fresh install that the upgraded database lacks')
  or diag("fresh install only:\n" . join("\n", @lacking));
my $members = sql('new', 'twin', <<'SQL');
SELECT count(*) FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
 WHERE e.extname = 'credits' AND d.deptype = 'e'
SQL
note("compared $members extension members in " . scalar(@fresh) . ' lines');

# Every row kept: each 0.1.0 table's rows, in its 0.1.0 columns, are still there.  The only
# column rewritten is the amount of usage transactions, compared with the twin below.
for my $t (@old_tables)
{
	my $cols = sql('old', 'upgraded', <<"SQL");
SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
 WHERE attrelid = 'public.old_$t'::regclass AND attnum > 0 AND NOT attisdropped
SQL
	my $kept = $cols;
	$kept =~ s/\bamount\b/CASE WHEN type = 'usage' THEN NULL ELSE amount END AS amount/ if $t eq 'transactions';
	my $missing = sql('old', 'upgraded', <<"SQL");
SELECT count(*) FROM ((SELECT $kept FROM public.old_$t) EXCEPT ALL (SELECT $kept FROM credits.$t)) AS gone
SQL
	my $rows = sql('old', 'upgraded', "SELECT count(*) FROM public.old_$t");
	is($missing, 0, "credits.$t: all $rows rows of 0.1.0 kept");
	my $now = sql('old', 'upgraded', "SELECT count(*) FROM credits.$t");
	is($now, $rows, "credits.$t: no row added or lost by the upgrade");
}
my $old_sequence_names = join ', ', map { my ($n) = split /=/; "'$n'" } split / /, $old_sequences;
is(sql('old', 'upgraded', <<"SQL"), $old_sequences, 'the sequences go on where they were');
SELECT string_agg(format('%s=%s', c.relname, s.last_value), ' ' ORDER BY c.relname)
  FROM pg_class c, LATERAL (SELECT pg_sequence_last_value(c.oid) AS last_value) s
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'S' AND c.relname IN ($old_sequence_names)
SQL

# The upgraded rows equal the twin's: the same history through a fresh install.
same_as_twin('after the upgrade');
is(sql('old', 'upgraded', 'SELECT count(*) FROM credits.verify()'), 0, 'verify() is clean after the upgrade');

# ----------------------------------------------------------------------------------------------
# Billing goes on: the same calls on the upgraded database, the twin, and the one left at 0.1.0.
my @next = (
	q{SET credits.clock = '2026-03-08 10:40+00'; SELECT credits.record_usage(1, 'api:chat', '0.30')},
	q{SET credits.clock = '2026-03-08 10:41+00'; SELECT credits.record_usage(1, 'api:chat', '0.30', 'req-4')},
	q{SET credits.clock = '2026-03-08 10:42+00';
	  SELECT credits.complete_deposit(1, t.transaction_id, 'https://invoices.example/3')
	    FROM credits.transactions t WHERE t.project_id = 1 AND t.idempotency_key = 'order-pending'},
	q{SET credits.clock = '2026-03-08 10:43+00'; SELECT credits.start_instance(3, 'gpu-3', '1.50')},
	q{SET credits.clock = '2026-03-08 10:50+00'; SELECT credits.run_balance_checks()},
	q{SET credits.clock = '2026-03-08 11:00:05+00'; SELECT credits.run_hourly_deductions()},
	q{SET credits.clock = '2026-03-08 11:30+00'; SELECT credits.stop_instance(1, 'gpu-1b')},
	q{SET credits.clock = '2026-03-08 11:31+00';
	  SELECT credits.complete_deposit(2, credits.add_credits(2, '15.00'), 'https://invoices.example/4')},
	q{SET credits.clock = '2026-03-08 11:32+00';
	  SELECT credits.record_usage_batch(ARRAY[1, 3], ARRAY['api:chat', 'api:chat'], ARRAY['0.05', '0.06']::credits.credits[])},
	q{SET credits.clock = '2026-03-08 11:33+00'; SELECT credits.ack_event(e.event_id) FROM credits.claim_events(100) AS e},
	q{SET credits.clock = '2026-03-08 12:00:05+00'; SELECT credits.run_hourly_deductions()},
	q{SET credits.clock = '2026-03-08 13:00:05+00'; SELECT credits.run_balance_checks(); SELECT credits.run_hourly_deductions()},
);
my $fingerprint = <<'SQL';
SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM (
  SELECT 'a', project_id::text, balance::text, depleted::text FROM credits.accounts
  UNION ALL SELECT 't', transaction_id::text, status::text, amount::text FROM credits.transactions
  UNION ALL SELECT 'r', resource_id, state, coalesce(accrued_until::text, '') FROM credits.resources
  UNION ALL SELECT 'e', event_id::text, kind, coalesce(acked_at::text, '') FROM credits.events
  UNION ALL SELECT 'u', count(*)::text, '', '' FROM credits.usage_events
  UNION ALL SELECT 'k', count(*)::text, '', '' FROM credits.usage_keys) AS t
SQL
my ($stale_refused, $stale_ran) = (0, 0);
for my $step (@next)
{
	sql('old', 'upgraded', $step);
	sql('new', 'twin', $step);
	my $before = sql('old', 'stale', $fingerprint);
	my ($rc, $out, $err) = $node{old}->psql('stale', $step, on_error_stop => 1);
	if ($rc == 0)
	{
		$stale_ran++;
	}
	else
	{
		$stale_refused++;
		like($err, qr/ALTER EXTENSION credits UPDATE/, "at 0.1.0 with the new library, a refused call names the upgrade: $err");
		is(sql('old', 'stale', $fingerprint), $before, 'and writes nothing');
	}
}
note("the database left at 0.1.0: $stale_ran calls ran, $stale_refused were refused");
same_as_twin('after billing on');
is(sql('old', 'upgraded', 'SELECT count(*) FROM credits.verify()'), 0, 'verify() is clean after billing on');
is(sql('new', 'twin', 'SELECT count(*) FROM credits.verify()'), 0, "the twin's verify() is clean");
if ($stale_refused == 0)
{
	# Everything ran as 0.1.0: its balances and states are the upgraded database's, and its own
	# verify() (0.1.0's rules) is clean.
	my $state = q{SELECT string_agg(format('%s %s %s', project_id, balance, depleted), ';' ORDER BY project_id) FROM credits.accounts};
	is(sql('old', 'stale', $state), sql('old', 'upgraded', $state), 'at 0.1.0 with the new library, the balances are the same');
	is(sql('old', 'stale', 'SELECT count(*) FROM credits.verify()'), 0, "and 0.1.0's verify() is clean");
}

done_testing();

# ----------------------------------------------------------------------------------------------

# The lines of the first list that the second lacks.
sub difference
{
	my ($a, $b) = @_;
	my %in_b;
	$in_b{$_}++ for @$b;
	return [ grep { !($in_b{$_}-- > 0) } @$a ];
}

# Every table of the newest version holds the same rows in the upgraded database and the twin.
sub same_as_twin
{
	my ($when) = @_;
	my @tables = split /\n/, sql('new', 'twin', <<'SQL');
SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'r'
 ORDER BY 1
SQL
	for my $t (@tables)
	{
		my $rows = "SELECT t::text FROM credits.$t AS t ORDER BY 1";
		my @u = split /\n/, sql('old', 'upgraded', $rows);
		my @w = split /\n/, sql('new', 'twin', $rows);
		is_deeply(\@u, \@w, "$when, credits.$t holds the twin's " . scalar(@w) . ' rows');
	}
}
