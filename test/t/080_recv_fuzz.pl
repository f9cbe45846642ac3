
# Fuzzer for the binary input of credits (credits_recv), run inside a real server.  Random byte
# strings (lengths 0 to 16, mostly 7, 8 and 9; random bytes and edge values) and NULLs reach
# credits_recv by the two ways a client can send binary values:
#
#   bind  binary bind parameters of a prepared INSERT ... RETURNING, sent by a minimal
#         protocol-3 client written here (DBD::Pg only binds bytea in binary), pipelined,
#         one Sync per case so that each case succeeds or fails alone;
#   copy  binary COPY FROM STDIN (DBD::Pg pg_putcopydata), one COPY per case.
#
# Each outcome is compared with an independent reference written here from the README (the credits type):
#   * exactly 8 bytes: accepted; the value is the big-endian two's-complement int64 count of
#     micro-credits: c::text equals a reference formatter (string arithmetic on the bytes), and
#     credits_send gives the same 8 bytes back (binary result column; binary COPY TO);
#   * NULL: accepted as NULL;
#   * more than 8 bytes: 22P03 (bytes left over);  fewer: 08P01 "insufficient data left in
#     message", as for core int8 (the caller's 22P03 here would mean recv read past the value);
#   * nothing stored for a refused case: every batch checks the table holds exactly the
#     accepted cases.
#
#   CREDITS_RECV_FUZZ_SEED=N      replay (default random; printed, and in every failure)
#   CREDITS_RECV_FUZZ_SECONDS=N   time per path (default 12)
#   CREDITS_RECV_FUZZ_CASES=N     a number of cases per path instead of a time (exact replay)
#   CREDITS_RECV_FUZZ_FIXED=0     random cases only, without the fixed edge cases first
#                                 (test/fuzz/recv_mutants.sh checks that they alone find its bugs)
# A path stops at its tenth failure; the first ones are printed with the input and the replay.
use strict;
use warnings;

use DBI;
use IO::Socket::UNIX;
use PostgreSQL::Test::Utils;
use Test::More;
use CreditsNode;
use Time::HiRes qw(time);

my $seed    = $ENV{CREDITS_RECV_FUZZ_SEED}    // int(rand(2**31));
my $seconds = $ENV{CREDITS_RECV_FUZZ_SECONDS} // 12;
my $cases   = $ENV{CREDITS_RECV_FUZZ_CASES};
my $fixed   = $ENV{CREDITS_RECV_FUZZ_FIXED} // 1;
my $replay  = "CREDITS_RECV_FUZZ_SEED=$seed" . ($fixed ? '' : ' CREDITS_RECV_FUZZ_FIXED=0');
diag("recv fuzz: $replay " . ($cases ? "CREDITS_RECV_FUZZ_CASES=$cases" : "CREDITS_RECV_FUZZ_SECONDS=$seconds"));

my $BATCH     = 200;    # cases between two checks of the stored rows
my $MAX_FAILS = 10;     # a path stops there

# ----------------------------------------------------------------------------------------------
# The reference.

# The text form of 8 bytes read as a big-endian two's-complement count of micro-credits:
# decoded from two 32-bit halves, negated by hand, printed by sprintf('%u') and cut into
# credits and micro-credits as strings (no signed 64-bit arithmetic, no float).
sub ref_text
{
	my ($bytes) = @_;
	my ($hi, $lo) = unpack('N N', $bytes);
	my $negative = $hi >= 0x80000000;
	if ($negative)
	{
		($hi, $lo) = (~$hi & 0xffffffff, ~$lo & 0xffffffff);
		$lo++;
		if ($lo > 0xffffffff) { $lo = 0; $hi++; }
	}
	my $digits = sprintf('%u', $hi * 4294967296 + $lo);    # at most 2^63: exact in a UV
	$digits = ('0' x (7 - length $digits)) . $digits if length $digits < 7;
	my ($whole, $micro) = ($digits =~ /^(\d+)(\d{6})$/);
	$micro =~ s/0$// for 1 .. 4;
	return ($negative ? '-' : '') . "$whole.$micro";
}

# What credits_recv must do with one case (bytes, or undef for NULL): [outcome, text].
sub expected
{
	my ($bytes) = @_;
	return [ 'null', undef ] unless defined $bytes;
	return [ 'ok', ref_text($bytes) ] if length $bytes == 8;
	return [ length $bytes > 8 ? '22P03' : '08P01', undef ];
}

# ----------------------------------------------------------------------------------------------
# The cases.

# 8-byte values where decoding, sign and printing go wrong first.
my @EDGES = map { pack('H16', $_) } qw(
  0000000000000000 0000000000000001 ffffffffffffffff 8000000000000000 7fffffffffffffff
  8000000000000001 7ffffffffffffffe 0000000080000000 00000000ffffffff ffffffff00000000
  000000007fffffff ffffffff80000000 0102030405060708 0807060504030201 00000000000f4240
  fffffffffff0bdc0 00000000000f423f 00000000000f4241 0000000100000000 00ff00ff00ff00ff
  ff00ff00ff00ff00 8080808080808080 7f7f7f7f7f7f7f7f 0000000000000080 8000000000000080);

# A random 8-byte value: random bytes, an edge, a power of two or of ten (either sign, +-1).
sub random_value
{
	my $r = rand();
	return join('', map { chr(int(rand(256))) } 1 .. 8) if $r < 0.5;
	return $EDGES[ int(rand(@EDGES)) ] if $r < 0.7;
	my $bytes = $r < 0.85
	  ? pack('Q>', 1 << int(rand(63)))
	  : pack('Q>', 10**int(rand(19)));
	$bytes = pack('Q>', unpack('Q>', $bytes) + int(rand(3)) - 1);
	$bytes = pack('q>', -unpack('q>', $bytes)) if rand() < 0.5;
	return $bytes;
}

# A random case: NULL, or a value cut or padded to a length 0..16 biased to 7, 8 and 9.
sub random_case
{
	my $r = rand();
	return undef if $r < 0.02;
	my $length = $r < 0.55 ? 8 : $r < 0.65 ? 7 : $r < 0.75 ? 9 : int(rand(17));
	my $bytes = random_value();
	while (length $bytes < $length)
	{
		my $more = chr(int(rand(256)));
		$bytes = rand() < 0.5 ? $bytes . $more : $more . $bytes;
	}
	$bytes = rand() < 0.5 ? substr($bytes, 0, $length) : substr($bytes, -$length)
	  if length $bytes > $length;
	$bytes = '' if $length == 0;
	return $bytes;
}

# The fixed cases every run starts with: the edges, NULL, and every length 0..16.
sub fixed_cases
{
	my @fixed = (@EDGES, undef);
	push @fixed, map { substr("\x80\x01\x02\x03\x04\x05\x06\x07\xff\x7f\x00\x01\x02\x03\x04\x05", 0, $_) }
	  0 .. 16;
	return @fixed;
}

# Cases for one path: the fixed ones, then random ones until the time or count is spent, or the
# path has failed often enough.  Returns a closure giving [case] (case undef for NULL), or undef.
sub case_source
{
	my ($stats) = @_;
	my @fixed = $fixed ? fixed_cases() : ();
	my $start = time();
	my $n     = 0;
	srand($seed);
	return sub {
		return undef
		  if $stats->{failures} >= $MAX_FAILS
		  || ($cases ? $n >= $cases : ($n >= @fixed && time() - $start >= $seconds));
		my $case = $n < @fixed ? $fixed[$n] : random_case();
		$n++;
		return [$case];
	};
}

sub hex_of { return defined $_[0] ? unpack('H*', $_[0]) . ' (' . length($_[0]) . ' bytes)' : 'NULL'; }

# ----------------------------------------------------------------------------------------------
# A minimal protocol-3 client on the server's Unix socket (trust authentication).

# Sends one message: type byte, length, body.
sub wire_send
{
	my ($sock, $type, $body) = @_;
	print $sock $type, pack('N', 4 + length $body), $body;
}

# Reads one message: (type, body); dies if the server went away.
sub wire_read
{
	my ($sock) = @_;
	my $head;
	die "connection lost\n" unless read($sock, $head, 5) == 5;
	my ($type, $length) = unpack('a N', $head);
	my $body = '';
	die "connection lost\n" if $length > 4 && read($sock, $body, $length - 4) != $length - 4;
	return ($type, $body);
}

# The SQLSTATE and message of an ErrorResponse body.
sub wire_error
{
	my ($body) = @_;
	my %f = $body =~ /\G([^\0])([^\0]*)\0/g;
	return ($f{C} // '?????', $f{M} // '');
}

# Connects and waits for ReadyForQuery.
sub wire_connect
{
	my ($node, $user) = @_;
	my $path = $node->host . '/.s.PGSQL.' . $node->port;
	my $sock = IO::Socket::UNIX->new(Peer => $path) or die "cannot connect to $path: $!";
	$sock->autoflush(0);
	my $startup = pack('N', 196608) . "user\0$user\0database\0postgres\0\0";
	print $sock pack('N', 4 + length $startup), $startup;
	$sock->flush;
	while (1)
	{
		my ($type, $body) = wire_read($sock);
		die 'authentication needed: ' . unpack('N', $body) . "\n" if $type eq 'R' && unpack('N', $body);
		die 'connection refused: ' . join(' ', wire_error($body)) . "\n" if $type eq 'E';
		return $sock if $type eq 'Z';
	}
}

# The 'bind' path: INSERT id, the case and a tail parameter, all bound in binary, returning
# c::text in text and c in binary (credits_send).  Cases go in pipelined batches.
sub run_bind
{
	my ($node, $dbh, $user, $record, $stats) = @_;
	my $oid  = $dbh->selectrow_array(q{SELECT 'credits.credits'::regtype::oid});
	my $sock = wire_connect($node, $user);
	my $sql  = 'INSERT INTO fz_bind (id, c, tail) VALUES ($1, $2, $3) RETURNING c::text, c';
	wire_send($sock, 'P', "fz\0$sql\0" . pack('n N3', 3, 23, $oid, 23));
	wire_send($sock, 'S', '');
	$sock->flush;
	while (1)
	{
		my ($type, $body) = wire_read($sock);
		die 'prepare failed: ' . join(' ', wire_error($body)) . "\n" if $type eq 'E';
		last if $type eq 'Z';
	}
	my $next = case_source($stats);
	my $id   = 0;
	while (1)
	{
		my @batch;
		while (@batch < $BATCH && defined(my $c = $next->()))
		{
			my $bytes = $c->[0];
			$id++;
			push @batch, [ $id, $bytes ];
			my $param = defined $bytes ? pack('N', length $bytes) . $bytes : pack('l>', -1);
			wire_send($sock, 'B', "\0fz\0" . pack('n n3 n', 3, 1, 1, 1, 3)
				  . pack('N N', 4, $id) . $param . pack('N N', 4, 0x5a5a5a5a)
				  . pack('n n2', 2, 0, 1));
			wire_send($sock, 'E', "\0" . pack('N', 0));
			wire_send($sock, 'S', '');
		}
		last unless @batch;
		$sock->flush;
		for my $case (@batch)
		{
			my ($got, $text, $sent);
			while (1)
			{
				my ($type, $body) = wire_read($sock);
				if ($type eq 'E') { my ($state, $msg) = wire_error($body); $got = $state; }
				elsif ($type eq 'D')
				{
					my ($n, $tlen) = unpack('n l>', $body);
					$text = substr($body, 6, $tlen) if $tlen >= 0;
					my $slen = unpack('l>', substr($body, 6 + ($tlen > 0 ? $tlen : 0), 4));
					$sent = substr($body, 10 + ($tlen > 0 ? $tlen : 0), $slen) if $slen >= 0;
					$got = defined $text ? 'ok' : 'null';
				}
				last if $type eq 'Z';
			}
			$record->($case->[0], $case->[1], $got // 'nothing', $text, $sent);
		}
		check_stored($dbh, 'fz_bind', $record);
	}
	wire_send($sock, 'X', '');
	$sock->flush;
	close $sock;
}

# ----------------------------------------------------------------------------------------------
# The 'copy' path.

my $COPY_HEADER = "PGCOPY\n\xff\r\n\0" . pack('N N', 0, 0);

# One binary COPY row (id, the case, a tail int4) and the end marker.
sub copy_row
{
	my ($id, $bytes) = @_;
	my $field = defined $bytes ? pack('N', length $bytes) . $bytes : pack('l>', -1);
	return $COPY_HEADER . pack('n N N', 3, 4, $id) . $field . pack('N N', 4, 0x5a5a5a5a) . pack('s>', -1);
}

# The 'copy' path: one binary COPY FROM STDIN per case.
sub run_copy
{
	my ($dbh, $record, $stats) = @_;
	my $next = case_source($stats);
	my $id   = 0;
	my $in_batch = 0;
	while (defined(my $c = $next->()))
	{
		my $bytes = $c->[0];
		$id++;
		my $ok = $dbh->do('COPY fz_copy (id, c, tail) FROM STDIN (FORMAT binary)')
		  && $dbh->pg_putcopydata(copy_row($id, $bytes))
		  && $dbh->pg_putcopyend();
		my $got = $ok ? (defined $bytes ? 'ok' : 'null') : ($dbh->state || '?????');
		$record->($id, $bytes, $got, undef, undef);
		check_stored($dbh, 'fz_copy', $record) if ++$in_batch % $BATCH == 0;
	}
	check_stored($dbh, 'fz_copy', $record);
}

# ----------------------------------------------------------------------------------------------
# Checks.

# The table holds exactly the accepted cases of the batch, each with the reference text, and
# binary COPY TO (credits_send) gives their bytes back; then the table is emptied.
sub check_stored
{
	my ($dbh, $table, $record) = @_;
	my $rows = $dbh->selectall_arrayref("SELECT id, c::text FROM $table ORDER BY id")
	  or die "reading $table: " . $dbh->errstr;
	my %text = map { $_->[0] => $_->[1] } @$rows;
	my %sent = copy_out($dbh, "SELECT id, c FROM $table");
	$record->(undef, undef, 'stored', \%text, \%sent);
	$dbh->do("TRUNCATE $table") or die $dbh->errstr;
}

# Binary COPY TO STDOUT of (id int4, c credits) rows: id => the bytes of c (undef for NULL).
sub copy_out
{
	my ($dbh, $query) = @_;
	$dbh->do("COPY ($query) TO STDOUT (FORMAT binary)") or die $dbh->errstr;
	my ($data, $chunk) = ('');
	$data .= $chunk while $dbh->pg_getcopydata($chunk) >= 0;
	my $pos = 11 + 8 + unpack('N', substr($data, 15, 4));
	my %rows;
	while ((my $n = unpack('s>', substr($data, $pos, 2))) != -1)
	{
		die "binary COPY TO: $n fields\n" unless $n == 2;
		my $id   = unpack('N',  substr($data, $pos + 6, 4));
		my $clen = unpack('l>', substr($data, $pos + 10, 4));
		$rows{$id} = $clen < 0 ? undef : substr($data, $pos + 14, $clen);
		$pos += 14 + ($clen < 0 ? 0 : $clen);
	}
	return %rows;
}

# A recorder for one path: compares each outcome with the reference, counts outcomes and keeps
# the first failures.  record(id, bytes, outcome, text, sent) for a case; record(undef, undef,
# 'stored', {id => text}, {id => bytes}) for a batch check.
sub recorder
{
	my ($path, $stats) = @_;
	my %pending;    # accepted cases of the current batch: id => bytes
	my $fail = sub {
		my ($id, $what) = @_;
		$stats->{failures}++;
		push @{ $stats->{messages} }, "$path case $id: $what ($replay CREDITS_RECV_FUZZ_CASES=$id)"
		  if @{ $stats->{messages} } < $MAX_FAILS;
	};
	return sub {
		my ($id, $bytes, $got, $text, $sent) = @_;
		if ($got eq 'stored')
		{
			for my $k (sort { $a <=> $b } keys %pending)
			{
				my $want = expected($pending{$k})->[1];
				$fail->($k, "stored text " . ($text->{$k} // 'NULL') . ", expected " . ($want // 'NULL'))
				  unless exists $text->{$k} && ($text->{$k} // 'NULL') eq ($want // 'NULL');
				$fail->($k, 'binary COPY TO gave ' . hex_of($sent->{$k}) . ', sent ' . hex_of($pending{$k}))
				  unless exists $sent->{$k} && hex_of($sent->{$k}) eq hex_of($pending{$k});
			}
			$fail->($_, 'stored although refused') for grep { !exists $pending{$_} } keys %$text;
			%pending = ();
			return;
		}
		$stats->{cases}++;
		$stats->{outcomes}{$got}++;
		my ($want, $want_text) = @{ expected($bytes) };
		if ($got ne $want)
		{
			$fail->($id, 'input ' . hex_of($bytes) . ": got $got, expected $want");
			return;
		}
		$pending{$id} = $bytes if $got eq 'ok' || $got eq 'null';
		return if $path ne 'bind' || $got ne 'ok';
		$fail->($id, 'input ' . hex_of($bytes) . ": c::text $text, expected $want_text")
		  unless $text eq $want_text;
		$fail->($id, 'input ' . hex_of($bytes) . ': credits_send gave ' . hex_of($sent))
		  unless defined $sent && $sent eq $bytes;
	};
}

# Runs one path and reports it: outcome counts, no failure, every outcome seen.
sub report
{
	my ($path, $run) = @_;
	my %stats = (cases => 0, failures => 0, messages => [], outcomes => {});
	my $t0    = time();
	eval { $run->(recorder($path, \%stats), \%stats); 1 }
	  or do { chomp(my $e = $@); $stats{failures}++; push @{ $stats{messages} }, "$path: $e after $stats{cases} cases ($replay)"; };
	my $elapsed = time() - $t0;
	diag(sprintf('%s: %d cases in %.1f s (%.0f/s): %s', $path, $stats{cases}, $elapsed,
			$stats{cases} / ($elapsed || 1),
			join(', ', map { "$_ $stats{outcomes}{$_}" } sort keys %{ $stats{outcomes} })));
	diag($_) for @{ $stats{messages} };
	is($stats{failures}, 0, "$path: every outcome as the reference says");
	ok($stats{outcomes}{$_}, "$path: some cases gave $_") for qw(ok null 22P03 08P01);
}

# ----------------------------------------------------------------------------------------------

# The reference formatter itself, on values whose text form is known.
is(ref_text(pack('H16', $_->[0])), $_->[1], "reference: $_->[0] is $_->[1]")
  for ([ '0000000000000000', '0.00' ], [ 'ffffffffffffffff', '-0.000001' ],
	[ '8000000000000000', '-9223372036854.775808' ], [ '7fffffffffffffff', '9223372036854.775807' ],
	[ '00000000000f4240', '1.00' ], [ '0000000000bc614e', '12.345678' ],
	[ 'fffffffffffc2f70', '-0.25' ], [ '0000000000000064', '0.0001' ]);

my $node = CreditsNode::start_node('recv_fuzz', <<'CONF');
synchronous_commit = off
log_min_messages = log
log_min_error_statement = panic
CONF
$node->safe_psql('postgres', <<'SQL');
CREATE TABLE fz_bind (id int PRIMARY KEY, c credits.credits, tail int NOT NULL);
CREATE TABLE fz_copy (id int PRIMARY KEY, c credits.credits, tail int NOT NULL);
SQL

my $dbh = DBI->connect('dbi:Pg:dbname=postgres;host=' . $node->host . ';port=' . $node->port,
	'', '', { AutoCommit => 1, RaiseError => 0, PrintError => 0 })
  or BAIL_OUT("cannot connect: $DBI::errstr");
my $user = $dbh->selectrow_array('SELECT current_user');

report('bind', sub { run_bind($node, $dbh, $user, @_) });
report('copy', sub { run_copy($dbh, @_) });

# The server survived it all.
is($node->safe_psql('postgres', q{SELECT '1.5'::credits.credits::text}), '1.50', 'server still answers');

$dbh->disconnect;
$node->stop;
done_testing();
