
# The router serves the same API as one server: a router running credits_router in front of two
# shards (16 partitions), and a single server, get the same seeded sequence of calls; every
# project lives on the one shard hashint8(project_id) names, and the balances, histories,
# resources and SQLSTATEs are the same through the router as on the single server.  Every
# public per-project function and view of credits has its twin on the router, with the same
# signature, defaults, result and grants.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CreditsNode;
use CreditsRouter;

my $seed = $ENV{CREDITS_ROUTER_SEED} // 17;
note "CREDITS_ROUTER_SEED=$seed";
srand($seed);

my @shards = map { CreditsRouter::start_shard("shard$_") } 0 .. 1;
my $router = CreditsRouter::start_router('router', 16, @shards);
my $single = CreditsNode::start_node('single');
my @servers = (@shards, $single);

# Every shard and the single server bill at the same time (GUCs set on the router are not sent
# to the shards, so the clock is the database's); each router call below is a new session.
sub set_clock
{
	my ($at) = @_;
	$_->safe_psql('postgres', "ALTER DATABASE postgres SET credits.clock = '$at'") for @servers;
}

# The periodic runs, as each shard's pg_cron and the single server's run them.
sub run_periodic
{
	$_->safe_psql('postgres', 'SELECT credits.run_hourly_deductions(), credits.run_balance_checks()')
	  for @servers;
}

# ----------------------------------------------------------------------------------------------
# Twins: the public per-project functions and views of credits, as a shard's catalogue lists
# them, against the router's functions of the same names.

# (one line per function: its signature, result and the credits roles granted EXECUTE)
my $function_line = q{
  SELECT format('%s(%s) -> %s %s', p.proname, pg_get_function_arguments(p.oid),
                pg_get_function_result(p.oid),
                (SELECT string_agg(r.rolname, ',' ORDER BY r.rolname) FROM aclexplode(p.proacl) a
                   JOIN pg_roles r ON r.oid = a.grantee WHERE r.rolname LIKE 'credits\_%')) AS line};
my $shard_api = $shards[0]->safe_psql('postgres', <<SQL);
SET search_path = pg_catalog;
SELECT string_agg(line, E'\n' ORDER BY line) FROM (
$function_line
    FROM pg_proc p
   WHERE p.pronamespace = 'credits'::regnamespace AND p.proname !~ '^_'
     AND p.proargnames[1] IN ('project_id', 'project_ids')
     AND (SELECT count(*) FROM aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
           WHERE r.rolname IN ('credits_reader', 'credits_app', 'credits_worker')) > 0
  UNION ALL
  SELECT format('%s(project_id bigint) -> TABLE(%s) %s', c.relname,
                (SELECT string_agg(format('%s %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
                   FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                (SELECT string_agg(r.rolname, ',' ORDER BY r.rolname) FROM aclexplode(c.relacl) a
                   JOIN pg_roles r ON r.oid = a.grantee WHERE r.rolname LIKE 'credits\_%' AND a.privilege_type = 'SELECT'))
    FROM pg_class c
   WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'v' AND c.relname !~ '^_'
     AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'project_id')
     AND (SELECT count(*) FROM aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
           WHERE r.rolname IN ('credits_reader', 'credits_app', 'credits_worker')) > 0
) AS api
SQL
my @names = map { /^(\w+)\(/ ? $1 : () } split /\n/, $shard_api;
my $name_list = join(', ', map { "'$_'" } @names);
my $router_api = $router->safe_psql('postgres', <<SQL);
SET search_path = pg_catalog;
SELECT string_agg(line, E'\\n' ORDER BY line) FROM (
$function_line
    FROM pg_proc p
   WHERE p.pronamespace = 'credits'::regnamespace AND p.proname IN ($name_list)
) AS api
SQL
ok(scalar(@names) >= 15, 'the shard lists its public per-project functions and views (' . scalar(@names) . ')');
is($router_api, $shard_api, 'each has its twin on the router: same name, arguments, defaults, result, grants');
is( $router->safe_psql('postgres', q{
      SELECT string_agg(DISTINCT l.lanname, ',') FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
       WHERE p.pronamespace = 'credits'::regnamespace AND p.proname IN ('open_account', 'verify', 'balance_overview', 'fleet_overview')}),
	'plproxy', 'the twins are PL/Proxy functions');

# ----------------------------------------------------------------------------------------------
# The same seeded calls through the router and on the single server.

my @projects = (1 .. 6, 1000, 65536, 4000000000, 9000000000000000000);
sub pick { return $_[ int(rand(@_)) ]; }
sub amount { return sprintf("'%d.%02d'", $_[0] + int(rand($_[1])), 1 + int(rand(99))); }

my @phase1 = ("SET client_min_messages = warning;");
for my $p (@projects)
{
	push @phase1, "SELECT credits.open_account($p);",
	  "SELECT credits.add_payment_method($p, 'pm_$p', 'card $p') AS m_$p \\gset";
	my $deposits = 1 + int(rand(3));
	for my $d (1 .. $deposits)
	{
		push @phase1, "SELECT credits.add_credits($p, " . amount(5, 40) . ", :m_$p, 'key-$p-$d') AS d \\gset";
		if (rand() < 0.8)
		{
			push @phase1, "SELECT credits.complete_deposit($p, :d, 'https://invoices.example/$p-$d');";
			push @phase1, "SELECT credits.complete_refund($p, credits.refund_deposit($p, :d, '1.00', 'goodwill'));"
			  if $d == 1 && rand() < 0.4;
		}
		else
		{
			push @phase1, "SELECT credits.fail_deposit($p, :d, 'card declined');";
		}
	}
	push @phase1, "SELECT credits.start_instance($p, 'gpu-$_', " . amount(1, 9) . ");" for 1 .. int(rand(3));
	push @phase1, "SELECT credits.attach_volume($p, 'vol-1', " . amount(0, 1) . ");" if rand() < 0.7;
	push @phase1, "SELECT credits.record_usage($p, 'api:" . pick('chat', 'embed') . "', " . amount(0, 2) . ");"
	  for 1 .. int(rand(4));
	push @phase1, "SELECT credits.configure_auto_recharge($p, true, '10.00', '25.00');" if rand() < 0.3;
	push @phase1, "SELECT credits.grant_credits($p, " . amount(1, 5) . ", expires_at => '2026-07-01 10:30+00');" if rand() < 0.4;
	push @phase1, "SELECT credits.grant_credits($p, " . amount(1, 5) . ", description => 'promo');" if rand() < 0.3;
	push @phase1, "SELECT credits.configure_limits($p, max_burn_rate => '50.00');" if rand() < 0.3;
}
# A batch across every project (and so across both shards), with and without keys.
my $batch = join(',', map { ($_) x 2 } @projects);
my $n = 2 * @projects;
push @phase1,
  "SELECT credits.record_usage_batch('{$batch}', array_fill('api:batch'::text, ARRAY[$n]), array_fill('0.125'::credits.credits, ARRAY[$n]));",
  "SELECT credits.record_usage_batch('{$batch}', array_fill('api:keyed'::text, ARRAY[$n]), array_fill('0.5'::credits.credits, ARRAY[$n]), "
  . "(SELECT array_agg('k' || i) FROM generate_series(1, $n) i));";

my @phase2 = ("SET client_min_messages = warning;");
for my $p (@projects)
{
	push @phase2, "SELECT credits.stop_instance($p, 'gpu-1');" if rand() < 0.5 && grep { /start_instance\($p, 'gpu-1'/ } @phase1;
	push @phase2, "SELECT credits.record_usage($p, 'api:chat', " . amount(0, 3) . ");" if rand() < 0.6;
	push @phase2, "SELECT credits.delete_volume($p, 'vol-1');" if rand() < 0.3 && grep { /attach_volume\($p,/ } @phase1;
	push @phase2, "SELECT credits.complete_deposit($p, credits.add_credits($p, '7.77'));" if rand() < 0.3;
}

sub run_both
{
	my ($script) = @_;
	my $sql = join("\n", @$script) . "\n";
	$router->safe_psql('postgres', $sql);
	$single->safe_psql('postgres', $sql);
}

set_clock('2026-07-01 09:30+00');
run_both(\@phase1);
set_clock('2026-07-01 11:05+00');
run_periodic();
run_both(\@phase2);
set_clock('2026-07-01 14:00+00');
run_periodic();

# Every project lives on exactly one shard: the one its partition names.
for my $p (@projects)
{
	my @on = grep { $shards[$_]->safe_psql('postgres', "SELECT count(*) FROM credits.accounts WHERE project_id = $p") eq '1' }
	  0 .. $#shards;
	my $expected = CreditsRouter::partition_of($router, $p) % @shards;
	is("@on", "$expected", "project $p lives on shard $expected only");
}

# Through the router, the same as on the single server.
# Every per-project view, with the columns that do not hold ids (a shard numbers its own
# transactions, methods and lots).
my @views = split /\n/, $single->safe_psql('postgres', q{
  SELECT c.relname || ' ' || string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
   WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'v' AND c.relname !~ '^_'
     AND (a.attname !~ '_id$' OR a.attname IN ('project_id', 'resource_id'))
     AND EXISTS (SELECT FROM pg_attribute p WHERE p.attrelid = c.oid AND p.attname = 'project_id')
   GROUP BY c.relname ORDER BY c.relname});
ok(scalar(@views) >= 5, 'views compared: ' . join(', ', map { (split / /)[0] } @views));
for my $view_cols (@views)
{
	my ($view, $cols) = split / /, $view_cols, 2;
	my $order = "ORDER BY $cols";
	my (@via_router, @direct);
	for my $p (@projects)
	{
		push @via_router, $router->safe_psql('postgres', "SELECT $cols FROM credits.$view($p) $order");
		push @direct, $single->safe_psql('postgres', "SELECT $cols FROM credits.$view WHERE project_id = $p $order");
	}
	is(join("\n", @via_router), join("\n", @direct), "$view: the same through the router as on one server");
}
# A per-project function returning rows: the month's statement.
my (@st_router, @st_single);
for my $p (@projects)
{
	my $q = "SELECT * FROM credits.statement($p, '2026-07-01', '2026-08-01')";
	push @st_router, $router->safe_psql('postgres', $q);
	push @st_single, $single->safe_psql('postgres', $q);
}
is(join("\n", @st_router), join("\n", @st_single), 'statement(): the same through the router');
ok((grep { /refund_deposit/ } @phase1) && (grep { /grant_credits/ } @phase1) && (grep { /fail_deposit/ } @phase1),
	'the calls included refunds, grants and failed deposits');

my $fleet = $router->safe_psql('postgres', 'SELECT * FROM credits.fleet_overview() ORDER BY project_id');
is($fleet, $single->safe_psql('postgres', 'SELECT * FROM credits.balance_overview ORDER BY project_id'),
	'fleet_overview() returns every shard\'s balance_overview rows');
like($fleet, qr/^1\|/, 'and it is not empty');
isnt($router->safe_psql('postgres', "SELECT count(*) FROM credits.transaction_history(1) WHERE type = 'usage' AND status = 'completed'"),
	'0', 'the history holds deducted hours');
is($router->safe_psql('postgres', 'SELECT count(*) FROM credits.verify()'), '0', 'verify() on every shard is clean');
is($router->safe_psql('postgres', 'SELECT count(*) FROM credits.verify(1)'), '0', 'verify(project) is clean');

# ----------------------------------------------------------------------------------------------
# SQLSTATEs arrive unchanged, and a refused call writes nothing.

my ($with_gpu) = map { /start_instance\((\d+), 'gpu-1'/ ? $1 : () } @phase1;
my @bad = (
	"SELECT credits.open_account(1)",
	"SELECT credits.open_account(NULL)",
	"SELECT credits.add_credits(2, '-5.00')",
	"SELECT credits.add_credits(2, '1.00')",
	"SELECT credits.add_credits(424242, '50.00')",
	"SELECT credits.add_credits(2, '1e3')",
	"SELECT credits.complete_deposit(3, 999999)",
	"SELECT credits.start_instance(4, NULL, '1.00')",
	"SELECT credits.start_instance(424242, 'gpu-9', '1.00')",
	"SELECT credits.stop_instance(5, 'no-such-instance')",
	"SELECT credits.attach_volume($with_gpu, 'gpu-1', '1.00')",
	"SELECT credits.record_usage(6, 'api:chat', '-1.00')",
	"SELECT credits.record_usage_batch('{1,2}', '{a}', '{1.00,2.00}')",
	"SELECT credits.record_usage_batch(NULL, '{a}', '{1.00}')",
	"SELECT credits.record_usage_batch('{424242}', '{a}', '{1.00}')",
	"SELECT credits.remove_payment_method(1, 999999)",
	"SELECT * FROM credits.verify(-1)");
my $before = $router->safe_psql('postgres', 'SELECT * FROM credits.fleet_overview() ORDER BY 1')
  . $router->safe_psql('postgres', join(' UNION ALL ', map { "SELECT count(*) FROM credits.transaction_history($_)" } @projects));
for my $sql (@bad)
{
	my @states = map {
		my ($ret, $out, $err) = $_->psql('postgres', "\\set VERBOSITY sqlstate\n$sql");
		$ret ? ($err =~ /ERROR:\s+(\w{5})/ ? $1 : "?$err") : 'ok';
	} ($router, $single);
	is($states[0], $states[1], "$sql: $states[1] through the router too");
}
is( $router->safe_psql('postgres', 'SELECT * FROM credits.fleet_overview() ORDER BY 1')
	  . $router->safe_psql('postgres', join(' UNION ALL ', map { "SELECT count(*) FROM credits.transaction_history($_)" } @projects)),
	$before, 'the refused calls wrote nothing');

# The outbox and the periodic runs are each shard's own: its worker and pg_cron use it directly.
my ($ret, $out, $err) = $router->psql('postgres', 'SELECT credits.claim_events()');
like($err, qr/function credits.claim_events\(\) does not exist/, 'claim_events() is not on the router');

# A shard that is down: its projects' calls fail with XX000, the other shard's go on.
my %on_shard = map { (CreditsRouter::partition_of($router, $_) % 2) => $_ } @projects;
$shards[1]->stop;
($ret, $out, $err) = $router->psql('postgres', "\\set VERBOSITY sqlstate\nSELECT * FROM credits.balance_overview($on_shard{1})");
like($err, qr/ERROR:\s+XX000/, 'a call for a project of a shard that is down fails with XX000');
is($router->safe_psql('postgres', "SELECT project_id FROM credits.balance_overview($on_shard{0})"), $on_shard{0},
	'the other shard\'s projects are served');
$shards[1]->start;
is($router->safe_psql('postgres', "SELECT project_id FROM credits.balance_overview($on_shard{1})"), $on_shard{1},
	'and the shard\'s projects again once it is back');

$_->stop for ($router, @servers);
done_testing();
