
# A partition moves to a new shard while usage is recorded through the router: the script
# sql/router/move_partitions.sh copies it by row-filtered logical replication, freezes its
# writes briefly (they fail with 25006 and are retried with the same idempotency key), switches
# the router's map and deletes the old copies.  Nothing is lost or doubled: every acknowledged
# call is billed once, verify() is clean on every shard, money is conserved, and the partition's
# rows are on the new shard only.
use strict;
use warnings;

use DBI;
use POSIX ();
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use CreditsRouter;

my @shards = map { CreditsRouter::start_shard("shard$_") } 0 .. 2;
my $router = CreditsRouter::start_router('router', 16, @shards[ 0, 1 ]);
$_->safe_psql('postgres', "ALTER DATABASE postgres SET credits.clock = '2026-07-01 10:00+00'") for @shards;

my @projects = (1 .. 48);
$router->safe_psql('postgres', join("\n", map {
	"SELECT credits.open_account($_); SELECT credits.add_payment_method($_, 'pm_$_'); SELECT credits.complete_deposit($_, credits.add_credits($_, '1000.00'));"
} @projects));

my %partition = map { $_ => CreditsRouter::partition_of($router, $_) } @projects;
my $k = $partition{1};
my @moving = grep { $partition{$_} == $k } @projects;
my $old = $shards[ $k % 2 ];
note "moving partition $k (projects @moving) from " . $old->name . ' to shard2';

# The writer: keyed usage calls through the router, each retried with its key until it is
# acknowledged; it counts the acknowledged calls per project and the refusals by SQLSTATE.
my $stop = "$PostgreSQL::Test::Utils::tmp_check/120_stop";
my $counts = "$PostgreSQL::Test::Utils::tmp_check/120_counts";
unlink $stop;
my $writer = fork() // die "fork: $!";
if ($writer == 0)
{
	my $dbh = DBI->connect('dbi:Pg:dbname=postgres;host=' . $router->host . ';port=' . $router->port,
		'', '', { AutoCommit => 1, RaiseError => 0, PrintError => 0 }) or die $DBI::errstr;
	$dbh->do('SET client_min_messages = warning');
	my (%done, %refused);
	my $i = 0;
	my @targets = (@moving, 2 .. 9);
	until (-e $stop)
	{
		my $p = $targets[ $i % @targets ];
		my $key = "move-" . $i++;
		for (my $try = 0;; $try++)
		{
			last if $dbh->do("SELECT credits.record_usage($p, 'api:move', '0.01', '$key')");
			$refused{ $dbh->state }++;
			die "call $key refused $try times: " . $dbh->errstr if $try > 500;
			usleep(5_000);
		}
		$done{$p}++;
	}
	open(my $fh, '>', $counts) or die $!;
	print $fh join("\n", map { "$_ $done{$_}" } sort { $a <=> $b } keys %done), "\n";
	print $fh "refused $_ $refused{$_}\n" for sort keys %refused;
	close $fh;
	POSIX::_exit(0);    # (not exit: the test's END blocks would stop the nodes)
}

sleep 1;
my $script = "$ENV{PWD}/sql/router/move_partitions.sh";
my ($out, $err) = ('', '');
my $ok = IPC::Run::run(
	[ $script, CreditsRouter::connstr($router), CreditsRouter::connstr($shards[2]), $k ],
	'>', \$out, '2>', \$err);
note $out;
ok($ok, 'move_partitions.sh succeeded') or diag $err;
my ($freeze) = $out =~ /write freeze: (\d+) ms/;
ok(defined $freeze, "it reports its write freeze (" . ($freeze // '?') . " ms)");
sleep 1;
open(my $fh, '>', $stop) or die $!;
close $fh;
waitpid($writer, 0);
is($?, 0, 'the writer ended cleanly');

my (%done, @refused);
open($fh, '<', $counts) or die "no counts: $!";
while (<$fh>)
{
	chomp;
	if (/^refused (\S+) (\d+)/) { push @refused, "$1 x$2"; next; }
	my ($p, $n) = split;
	$done{$p} = $n;
}
note "acknowledged calls: " . join(', ', map { "$_:$done{$_}" } sort { $a <=> $b } keys %done);
note "refused (then retried): @refused";
ok((grep { $done{$_} } @moving) == @moving, 'calls for every moved project were acknowledged');

# Where the rows are.
is( $router->safe_psql('postgres',
		"SELECT substr(o, length('p$k=') + 1) FROM pg_foreign_server s, unnest(s.srvoptions) o WHERE s.srvname = 'credits' AND o LIKE 'p$k=%'"),
	CreditsRouter::connstr($shards[2]), "the router sends partition $k to the new shard");
my $moving_list = join(',', @moving);
is($shards[2]->safe_psql('postgres', 'SELECT string_agg(project_id::text, \',\' ORDER BY project_id) FROM credits.accounts'),
	$moving_list, 'the new shard holds exactly the moved projects');
my $left = $old->safe_psql('postgres', <<SQL);
SELECT string_agg(c.relname, ',') FROM pg_class c
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'r'
   AND (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM credits.%I WHERE project_id IN ($moving_list)', c.relname), false, false, '')))[1]::text <> '0'
SQL
is($left, '', 'no table of the old shard keeps a row of a moved project');
is($old->safe_psql('postgres', "SELECT count(*) FROM pg_publication"), '0', 'the publication is gone');
is($shards[2]->safe_psql('postgres', "SELECT count(*) FROM pg_subscription"), '0', 'the subscription is gone');

# Bill the hour and check every acknowledged call was charged once.
$_->safe_psql('postgres', "ALTER DATABASE postgres SET credits.clock = '2026-07-01 11:05+00'") for @shards;
$_->safe_psql('postgres', 'SELECT credits.run_hourly_deductions()') for @shards;
my @wrong;
for my $p (@projects)
{
	my $charged = $router->safe_psql('postgres',
		"SET search_path = credits; SELECT coalesce(sum(uncollected - amount), '0') FROM credits.transaction_history($p) WHERE type = 'usage' AND status = 'completed'");
	my $expected = sprintf('%.2f', ($done{$p} // 0) * 0.01);
	push @wrong, "$p: charged $charged, acknowledged $expected" if $charged ne $expected;
}
is("@wrong", '', 'every project was charged exactly its acknowledged calls, moved or not');
is( $router->safe_psql('postgres', q{SET search_path = credits; SELECT sum(current_balance) FROM credits.fleet_overview()}),
	sprintf('%.2f', 1000 * @projects - 0.01 * eval { my $s = 0; $s += $_ for values %done; $s }),
	'money is conserved: the balances are the deposits less the acknowledged usage');
is($router->safe_psql('postgres', 'SELECT count(*) FROM credits.verify()'), '0', 'verify() is clean on every shard');
is($old->safe_psql('postgres', 'SELECT count(*) FROM credits.verify()'), '0', 'and on the old shard directly');
is( $router->safe_psql('postgres', "SELECT count(*) FROM credits.transaction_history(1) WHERE type = 'deposit'"),
	'1', 'a moved project has its deposit once');

$_->stop for ($router, @shards);
done_testing();
