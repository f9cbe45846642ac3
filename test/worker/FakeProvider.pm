package FakeProvider;

# A fake payment provider for the reference payment worker (test/worker/payment_worker.pl),
# its tests and the demo.  No network: a "charge" is a file.
#
# Interface (what any provider class plugged into the worker must offer):
#
#   my $p = FakeProvider->new(mode => 'rules', store => '/tmp/charges', delay_ms => 0);
#   my $r = $p->charge(key => 'credits-6010-123', amount => '25.00',
#                      provider_ref => 'pm_card_6010', reference => 123);
#   $r->{status}       'approved' | 'declined' | 'timeout'
#   $r->{charge_id}    the provider's id of the charge (approved and declined)
#   $r->{invoice_url}  approved: https://invoices.example/inv_<reference>
#   $r->{reason}       declined: why ('card_declined', ...)
#   $r->{replayed}     true when the key was charged before and this is that first result
#   my $r = $p->refund(key => 'credits-refund-6010-456', amount => '10.00',
#                      provider_ref => 'pm_card_6010', reference => 456);
#   the same answer: a refund is recorded, replayed and decided (mode, rules) as a charge is;
#   an approved one has a refund_id
#
# Idempotency: the provider keeps one record per idempotency key in the store directory,
# created atomically (write a temporary file, then link(2) it to the key's name, which fails
# if the name exists).  A second charge with a key already recorded, from this process or any
# other, charges nothing and returns the first result.  So a worker that re-delivers an event
# (after a crash, a timeout or a lost acknowledgement) never charges a card twice.
#
# Modes (option mode, or FAKE_PROVIDER_MODE; default 'rules'):
#   approve  every charge is approved
#   decline  every charge is declined (reason 'card_declined')
#   timeout  the first attempt for a key is charged (approved) but its answer is lost: the
#            caller sees 'timeout' and must try again later with the same key, which then
#            returns the recorded approval without charging again
#   rules    deterministic by request, for demos and tests:
#              amount ending in .13, or provider_ref containing 'decline'  -> declined
#                (amount .13: 'card_declined'; provider_ref: 'do_not_honor')
#              amount ending in .14, or provider_ref containing 'timeout'  -> as mode timeout
#              anything else                                               -> approved
# Other options:
#   store     directory of the records (FAKE_PROVIDER_STORE; default /tmp/fake-provider-<uid>)
#   delay_ms  simulated latency of every answer (FAKE_PROVIDER_DELAY_MS; default 0): the charge
#             is recorded first, then the answer takes this long, so a worker killed while
#             it waits has charged the card without hearing back
#
# Test hook: while a file named "hold" exists in the store, every answer is held back after
# its charge is recorded (a test can then kill the worker at exactly that point).
#
# The store also holds attempts.log: one line per call, "epoch pid key status replayed",
# appended atomically, so tests can count attempts as well as charges.
use strict;
use warnings;

use Carp qw(croak);
use Errno qw(EEXIST);
use Fcntl qw(O_WRONLY O_CREAT O_EXCL O_APPEND);
use File::Path qw(make_path);
use Time::HiRes ();

my %MODES = map { $_ => 1 } qw(approve decline timeout rules);

# Makes a provider; see the options above.
sub new
{
	my ($class, %opt) = @_;
	my $self = {
		mode     => $opt{mode}     // $ENV{FAKE_PROVIDER_MODE}     // 'rules',
		store    => $opt{store}    // $ENV{FAKE_PROVIDER_STORE}    // "/tmp/fake-provider-$<",
		delay_ms => $opt{delay_ms} // $ENV{FAKE_PROVIDER_DELAY_MS} // 0,
	};
	croak "unknown provider mode '$self->{mode}' (approve, decline, timeout, rules)"
	  unless $MODES{ $self->{mode} };
	make_path($self->{store});
	croak "provider store $self->{store} is not a writable directory"
	  unless -d $self->{store} && -w _;
	return bless $self, $class;
}

# The mode's answer to a first attempt: approved, declined (with a reason) or timeout.
sub _decide
{
	my ($self, %req) = @_;
	my $mode = $self->{mode};
	if ($mode eq 'rules')
	{
		my $ref = $req{provider_ref} // '';
		return ('declined', 'card_declined') if $req{amount} =~ /\.13$/;
		return ('declined', 'do_not_honor')  if $ref =~ /decline/;
		return ('timeout')                   if $req{amount} =~ /\.14$/ || $ref =~ /timeout/;
		return ('approved');
	}
	return ('approved') if $mode eq 'approve';
	return ('declined', 'card_declined') if $mode eq 'decline';
	return ('timeout');
}

# The file name of a key's record (keys may hold any character).
sub _record_path
{
	my ($self, $key) = @_;
	(my $name = $key) =~ s/([^A-Za-z0-9_.-])/sprintf('%%%02X', ord($1))/ge;
	return "$self->{store}/charge-$name";
}

# Reads a record written by _record (undef when there is none).
sub _read_record
{
	my ($path) = @_;
	open(my $fh, '<', $path) or return undef;
	my %r = map { chomp; split(/=/, $_, 2) } <$fh>;
	close $fh;
	return \%r;
}

# Writes the key's record unless one exists; returns the record that stands.
sub _record
{
	my ($self, $key, %r) = @_;
	my $path = $self->_record_path($key);
	my $tmp  = "$path.tmp.$$." . int(rand(1e9));
	sysopen(my $fh, $tmp, O_WRONLY | O_CREAT | O_EXCL) or croak "cannot write $tmp: $!";
	print $fh map { "$_=$r{$_}\n" } sort keys %r;
	close $fh or croak "cannot write $tmp: $!";
	my $linked = link($tmp, $path);
	my $err    = $!;
	unlink $tmp;
	return \%r if $linked;
	croak "cannot record charge $path: $err" unless $err == EEXIST;
	return _read_record($path);    # another process recorded this key first
}

# Appends one line to attempts.log.
sub _log_attempt
{
	my ($self, $key, $status, $replayed) = @_;
	sysopen(my $fh, "$self->{store}/attempts.log", O_WRONLY | O_CREAT | O_APPEND)
	  or croak "cannot append to $self->{store}/attempts.log: $!";
	syswrite($fh, sprintf("%.3f %d %s %s %d\n", Time::HiRes::time(), $$, $key, $status, $replayed ? 1 : 0));
	close $fh;
}

# Charges amount to provider_ref once per key; see the top of this file.
sub charge
{
	my ($self, %req) = @_;
	for my $arg (qw(key amount reference))
	{
		croak "charge: $arg is required" unless defined $req{$arg} && length $req{$arg};
	}
	croak "charge: amount '$req{amount}' is not a positive decimal"
	  unless $req{amount} =~ /^\d+(\.\d{1,6})?$/ && $req{amount} > 0;

	my $path = $self->_record_path($req{key});
	my $rec  = _read_record($path);
	my $replayed = defined $rec;
	my $lost_answer = 0;
	if (!$rec)
	{
		my ($status, $reason) = $self->_decide(%req);
		# A timeout is a charge whose answer is lost: the card is charged all the same.
		$lost_answer = $status eq 'timeout';
		$status = 'approved' if $lost_answer;
		$rec = $self->_record(
			$req{key},
			status       => $status,
			key          => $req{key},
			amount       => $req{amount},
			provider_ref => $req{provider_ref} // '',
			charge_id    => 'ch_' . $req{reference} . '_' . sprintf('%08x', int(rand(2**32))),
			($status eq 'approved' ? (invoice_url => "https://invoices.example/inv_$req{reference}") : ()),
			($status eq 'declined' ? (reason => $reason) : ()));
		croak "charge: key $req{key} was first used for amount $rec->{amount}, now $req{amount}"
		  if $rec->{amount} ne $req{amount};
	}
	elsif ($rec->{amount} ne $req{amount})
	{
		croak "charge: key $req{key} was first used for amount $rec->{amount}, now $req{amount}";
	}
	my $status = $lost_answer ? 'timeout' : $rec->{status};
	$self->_log_attempt($req{key}, $status, $replayed);
	Time::HiRes::sleep($self->{delay_ms} / 1000) if $self->{delay_ms};
	Time::HiRes::sleep(0.05) while -e "$self->{store}/hold";
	return { status => 'timeout', replayed => 0 } if $lost_answer;
	return { %$rec, replayed => $replayed };
}

# Refunds amount to provider_ref once per key: recorded like a charge (kind=refund), so the
# same idempotency, modes and rules apply; see the top of this file.
sub refund
{
	my ($self, %req) = @_;
	my $r = $self->charge(%req);
	$r->{refund_id} = $r->{charge_id} =~ s/^ch_/re_/r if $r->{status} eq 'approved';
	return $r;
}

# The recorded charges (and refunds): { key => record }, for tests.
sub charges
{
	my ($self) = @_;
	my %all;
	opendir(my $dh, $self->{store}) or croak "cannot read $self->{store}: $!";
	for my $f (grep { /^charge-/ && !/\.tmp\./ } readdir $dh)
	{
		my $r = _read_record("$self->{store}/$f");
		$all{ $r->{key} } = $r if $r;
	}
	closedir $dh;
	return \%all;
}

1;
