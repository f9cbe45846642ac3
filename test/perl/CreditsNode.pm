# A test server for the credits TAP tests (test/t/*.pl).
#
#   my $node = CreditsNode::start_node('model', <<'CONF');   # extra postgresql.conf lines
#   synchronous_commit = off
#   CONF
#
# Every node runs in UTC with untranslated messages and without fsync (a crash test kills the
# server, not the machine); credits is created in database postgres.
package CreditsNode;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;

# Initialises and starts a node called $name with the common settings and $extra_conf, and
# creates the extension in database postgres.
sub start_node
{
	my ($name, $extra_conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', <<'CONF' . ($extra_conf // ''));
timezone = 'UTC'
lc_messages = 'C'
fsync = off
CONF
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION credits');
	return $node;
}

1;
