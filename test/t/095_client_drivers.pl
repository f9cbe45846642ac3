# The API driven from a real client library as application code uses it: psycopg 3 (Debian's
# python3-psycopg) with server-side binding, amounts as Python Decimals (numeric and numeric[]
# on the wire), credits read back as Decimal.  test/clients/psycopg_amounts.py holds the checks.
use strict;
use warnings;

use lib 'test/perl';
use CreditsNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $python = '/usr/bin/python3';
plan skip_all => 'Debian python3-psycopg is not installed (test/setup.sh installs it)'
  unless system("$python -c 'import psycopg' 2>/dev/null") == 0;

my $node = CreditsNode::start_node('clients');
my $conninfo = $node->connstr('postgres');
my ($stdout, $stderr);
my $ok = IPC::Run::run([ $python, 'test/clients/psycopg_amounts.py', $conninfo ], '>', \$stdout, '2>', \$stderr);
note($stdout);
ok($ok, 'psycopg 3 with Decimal amounts: every check passed') or diag($stderr);
like($stdout, qr/^all psycopg checks passed$/m, 'the script ran to its end');
done_testing();
