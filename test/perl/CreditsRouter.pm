# Loopback clusters for the router's TAP tests: shards running credits and a router running
# credits_router in front of them (unix sockets only).
#
#   my @shards = map { CreditsRouter::start_shard("shard$_", $conf) } 0 .. 1;
#   my $router = CreditsRouter::start_router('router', 16, @shards);   # 16 partitions, round robin
#   CreditsRouter::shard_index($router, $project)   # which of @shards the router sends it to
#
# Shards run with wal_level = logical (a partition can be moved off them by logical
# replication) and the common settings of CreditsNode.
package CreditsRouter;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use CreditsNode;

# A shard: a credits node ready to publish and to be moved from or to.
sub start_shard
{
	my ($name, $extra_conf) = @_;
	return CreditsNode::start_node($name, <<'CONF' . ($extra_conf // ''));
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
CONF
}

# The libpq connection string of a node's database postgres.
sub connstr
{
	my ($node) = @_;
	return 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres';
}

# The OPTIONS list of server credits: $partitions partitions, partition k on shard k mod N.
sub server_options
{
	my ($partitions, @shards) = @_;
	return join(', ',
		map { "p$_ '" . connstr($shards[ $_ % @shards ]) . "'" } 0 .. $partitions - 1);
}

# A router in front of @shards: plproxy, server credits, a user mapping, credits_router.
sub start_router
{
	my ($name, $partitions, @shards) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', "timezone = 'UTC'\nlc_messages = 'C'\nfsync = off\n");
	$node->start;
	my $options = server_options($partitions, @shards);
	$node->safe_psql('postgres', <<SQL);
CREATE EXTENSION plproxy;
CREATE SERVER credits FOREIGN DATA WRAPPER plproxy OPTIONS ($options);
CREATE USER MAPPING FOR PUBLIC SERVER credits;
CREATE EXTENSION credits_router;
SQL
	return $node;
}

# The index in the router's server options of the shard a project is routed to.
sub partition_of
{
	my ($router, $project) = @_;
	return $router->safe_psql('postgres', <<SQL);
SELECT credits._partition_of($project) & (count(*) - 1)
  FROM pg_foreign_server s, unnest(s.srvoptions) o WHERE s.srvname = 'credits' AND o ~ '^p[0-9]+='
SQL
}

1;
