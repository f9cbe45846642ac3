
# CreditsModel — a reference model of the credits extension, written from README.md (the user contract
# and the COMMENTs), independently of the SQL and C that implement it.
#
# Everything is a plain Perl integer: money in micro-credits, time in microseconds since the
# epoch, time-based accrual in exact "rate-microseconds" (rate in micro-credits per hour times
# microseconds), rounded half to even once per (resource, hour).  Nothing here reads the
# implementation, except the identifiers the database hands out (transaction, method and event
# ids), which the harness passes in after each call so that orders "by transaction id" can be
# followed.
#
# The second package, CreditsModel::Gen, draws random operations that are mostly valid for the
# model's current state, with a share of invalid ones that must fail and change nothing.
package CreditsModel;

use strict;
use warnings;

use Time::Local ();

our $HOUR  = 3_600_000_000;    # microseconds per hour, and rate-microseconds per micro-credit
our $LEASE = 300_000_000;      # credits.event_lease default: 5 minutes
our $MAX_AMOUNT = 1_000_000_000_000_000;    # amounts and rates: at most one billion credits

# Start of the UTC hour of t (t >= 0).
sub hour_of { my $t = shift; return $t - ($t % $HOUR); }

# units / 3.6e9 rounded half to even (units >= 0).
sub round_units
{
	my $u = shift;
	die "model: negative units $u" if $u < 0;
	die "model: units out of the model's integer range: $u" if $u > 4_000_000_000_000_000_000;
	use integer;
	my $q = $u / $HOUR;
	my $r = $u % $HOUR;
	$q++ if 2 * $r > $HOUR || (2 * $r == $HOUR && ($q & 1));
	return $q;
}

# What a (resource, hour) comes to: its exact total (API usage, a whole number of
# micro-credits, plus the rate-microseconds of time) rounded once, half to even.  (Not API
# usage plus the rounded time: the parity that decides a half depends on the whole.)
sub row_amount
{
	my $r = shift;
	return round_units($r->{api} * $HOUR + $r->{units});
}

# micro-credits -> credits text ("-1.500000")
sub fmt_credits
{
	my $v = shift;
	return undef unless defined $v;
	my $neg = $v < 0 ? '-' : '';
	$v = -$v if $v < 0;
	use integer;
	return sprintf('%s%d.%06d', $neg, $v / 1_000_000, $v % 1_000_000);
}

# credits text -> micro-credits
sub parse_credits
{
	my $s = shift;
	return undef unless defined $s;
	$s =~ /^\s*([+-]?)(\d+)(?:\.(\d{1,6}))?\s*$/ or die "model: not a credits value: '$s'";
	my $v = $2 * 1_000_000 + (defined $3 ? substr($3 . '000000', 0, 6) : 0);
	return $1 eq '-' ? -$v : $v;
}

# microseconds since the epoch -> timestamptz text in UTC
sub fmt_ts
{
	my $us = shift;
	use integer;
	my @t = gmtime($us / 1_000_000);
	return sprintf('%04d-%02d-%02d %02d:%02d:%02d.%06d+00',
		$t[5] + 1900, $t[4] + 1, $t[3], $t[2], $t[1], $t[0], $us % 1_000_000);
}

sub _err { return { err => $_[0], why => $_[1] }; }

sub new
{
	my ($class, %o) = @_;
	my $self = bless {
		now         => $o{now},              # credits.now(), microseconds
		min_deposit => $o{min_deposit} // 5_000_000,
		acct        => {},    # pid -> { balance, depleted }
		methods     => {},    # method id -> { mid, pid, ref, default, removed }
		txns        => {},    # deposit/auto-recharge tid -> { tid, pid, type, status, amount, method, created, key }
		dep_keys    => {},    # pid -> key -> tid
		grant_keys  => {},    # pid -> key -> tid (grants)
		refund_keys => {},    # pid -> key -> tid (refunds)
		lots        => {},    # pid -> [ { tid, kind, amount, remaining, used, held, prio, expires, kinds,
		                      #          all_kinds, created, ended } ], oldest first
		usage_keys  => {},    # pid -> key -> [rid, amount]
		res         => {},    # pid -> rid -> { rid, kind, state, rate, since, live_from }
		active      => {},    # pid -> rid -> the same, for those not terminated or deleted
		live        => {},    # pid -> rid -> the same, for those running, available or inaccessible
		changes     => [],    # [pid, resource] each time a state changed, in time order
		pending     => {},    # tid -> pending deposit or auto-recharge
		rows        => {},    # pid -> rid -> hour -> usage row { pid, rid, h, units, api, status, tid, charge, uncollected }
		acc         => {},    # pid -> "rid\0hour" -> usage row still accumulating
		usage_tids  => {},    # tid -> usage row (once known)
		pending_api => [],    # recorded API usage not folded yet: [pid, rid, hour, amount]
		auto        => {},    # pid -> { enabled, threshold, amount, method, armed }
		controls    => {},    # pid -> spending limits and alerts (see "spending controls" below)
		events      => [],    # { id, pid, kind, rid, tid, detail, claimed_until, claims, acked }
		events_by_id => {},
		new_events  => [],    # events queued by the current operation (ids not known yet)
		touched     => {},    # tid or "usage\0pid\0rid\0hour" -> 1: what the current operation changed
		lookup      => sub { undef },    # ids the database gave to rows the operation created
		synthetic   => 1_000_000_000_000_000,
		charged     => {},    # pid -> hour -> the charges of its completed usage (the hours of this month)
		stats       => {},
	}, $class;
	return $self;
}

# ----------------------------------------------------------------------------------------------
# small helpers

sub _text_err
{
	my ($name, $v, $max, $nullable) = @_;
	if (!defined $v)
	{
		return $nullable ? undef : _err('22004', "$name is null");
	}
	return _err('22023', "$name has length " . length($v)) if length($v) == 0 || length($v) > $max;
	return undef;
}

sub _positive_err
{
	my ($name, $v) = @_;
	return _err('22004', "$name is null") unless defined $v;
	return _err('22023', "$name is not positive") if $v <= 0;
	return _err('22023', "$name is above one billion credits") if $v > $MAX_AMOUNT;
	return undef;
}

sub _account_err
{
	my ($self, $pid) = @_;
	return _err('22004', 'project_id is null') unless defined $pid;
	return _err('P0002', "unknown project $pid") unless $self->{acct}{$pid};
	return undef;
}

sub _active_method
{
	my ($self, $pid, $mid) = @_;
	return undef unless defined $mid;
	my $m = $self->{methods}{$mid};
	return ($m && $m->{pid} == $pid && !$m->{removed}) ? $m : undef;
}

sub default_method
{
	my ($self, $pid) = @_;
	for my $m (values %{ $self->{methods} })
	{
		return $m->{mid} if $m->{pid} == $pid && $m->{default};
	}
	return undef;
}

sub _event
{
	my ($self, $pid, $kind, $rid, $tid, $detail) = @_;
	push @{ $self->{new_events} },
	  { pid => $pid, kind => $kind, rid => $rid, tid => $tid, detail => $detail // '', claims => 0 };
}

# The content of an event, as the harness also builds it from the database.
sub event_key
{
	my $e = shift;
	return join('|', $e->{pid}, $e->{kind}, $e->{rid} // '', $e->{tid} // '', $e->{detail} // '');
}

sub _new_tid
{
	my ($self, @key) = @_;
	my $tid = $self->{lookup}->(@key);
	return $tid // ++$self->{synthetic};
}

# ----------------------------------------------------------------------------------------------
# metering

sub _row
{
	my ($self, $pid, $rid, $h) = @_;
	my $r = $self->{rows}{$pid}{$rid}{$h};
	if (!$r)
	{
		$r = $self->{rows}{$pid}{$rid}{$h} =
		  { pid => $pid, rid => $rid, h => $h, units => 0, api => 0, status => 'accumulating' };
		$self->{acc}{$pid}{"$rid\0$h"} = $r;
	}
	die "model: booking into the completed hour " . fmt_ts($h) . " of $pid/$rid"
	  if $r->{status} ne 'accumulating';
	return $r;
}

# The (hour, rate-microseconds) pieces of billing at rate over [from, upto).
sub _segments
{
	my ($rate, $from, $upto) = @_;
	my @s;
	for (my $h = hour_of($from); $h < $upto; $h += $HOUR)
	{
		my $lo = $from > $h ? $from : $h;
		my $hi = $upto < $h + $HOUR ? $upto : $h + $HOUR;
		push @s, [ $h, $rate * ($hi - $lo) ] if $hi > $lo;
	}
	return @s;
}

# Books a billing resource's time up to upto.
sub _book
{
	my ($self, $pid, $r, $upto) = @_;
	return unless defined $r->{live_from} && $r->{live_from} < $upto;
	for my $s (_segments($r->{rate}, $r->{live_from}, $upto))
	{
		my $row = $self->_row($pid, $r->{rid}, $s->[0]);
		$row->{units} += $s->[1];
		$row->{stored} = 1;    # (a usage transaction accumulating; API usage alone has none)
	}
	$r->{live_from} = $upto;
}

sub _hour_completed
{
	my ($self, $pid, $rid, $h) = @_;
	my $r = $self->{rows}{$pid}{$rid}{$h};
	return $r && $r->{status} eq 'completed';
}

# Where an unfolded API call is charged: its hour, or the current one when its hour was
# already deducted (README: a late call is charged in the current hour).
sub _api_hour
{
	my ($self, $ev) = @_;
	my ($pid, $rid, $h) = @$ev;
	return $self->_hour_completed($pid, $rid, $h) ? hour_of($self->{now}) : $h;
}

sub _fold
{
	my $self = shift;
	for my $ev (@{ $self->{pending_api} })
	{
		my $h = $self->_api_hour($ev);
		$self->{stats}{'late calls moved to the current hour'}++ if $h != $ev->[2];
		$self->_row($ev->[0], $ev->[1], $h)->{api} += $ev->[3];
	}
	$self->{pending_api} = [];
}

# Usage accrued and not deducted, as of now: "rid\0hour" -> { rid, h, amount }.
sub in_progress
{
	my ($self, $pid) = @_;
	my %u;
	for my $r (values %{ $self->{acc}{$pid} // {} })
	{
		my $x = $u{"$r->{rid}\0$r->{h}"} //= { rid => $r->{rid}, h => $r->{h}, units => 0, api => 0 };
		$x->{units} += $r->{units};
		$x->{api} += $r->{api};
	}
	for my $r (values %{ $self->{live}{$pid} // {} })
	{
		next unless defined $r->{live_from};
		for my $s (_segments($r->{rate}, $r->{live_from}, $self->{now}))
		{
			my $x = $u{"$r->{rid}\0$s->[0]"} //= { rid => $r->{rid}, h => $s->[0], units => 0, api => 0 };
			$x->{units} += $s->[1];
		}
	}
	for my $ev (@{ $self->{pending_api} })
	{
		next unless $ev->[0] == $pid;
		my $h = $self->_api_hour($ev);
		my $x = $u{"$ev->[1]\0$h"} //= { rid => $ev->[1], h => $h, units => 0, api => 0 };
		$x->{api} += $ev->[3];
	}
	$_->{amount} = row_amount($_) for values %u;
	return \%u;
}

sub accumulating
{
	my ($self, $pid) = @_;
	my $u = $self->in_progress($pid);
	my $sum = 0;
	$sum += $_->{amount} for values %$u;
	return wantarray ? ($sum, scalar(keys %$u)) : $sum;
}

sub available
{
	my ($self, $pid) = @_;
	my ($lots, $left) = $self->standing($pid);
	my $sum = 0;
	for my $l (@$lots)
	{
		$sum += $left->{ $l->{tid} } if !defined $l->{expires} || $l->{expires} > $self->{now};
	}
	return $sum;
}

# Credits per hour: rates of running instances and accessible volumes, plus the API usage of
# the last ended hour (ids that are not instances or volumes).
sub burn_rate
{
	my ($self, $pid) = @_;
	my $burn = 0;
	for my $r (values %{ $self->{live}{$pid} // {} })
	{
		$burn += $r->{rate} if $r->{state} eq 'running' || $r->{state} eq 'available';
	}
	my $last = hour_of($self->{now}) - $HOUR;
	for my $rid (keys %{ $self->{rows}{$pid} // {} })
	{
		next if $self->{res}{$pid}{$rid};
		my $r = $self->{rows}{$pid}{$rid}{$last};
		$burn += $r->{charge} if $r && $r->{status} eq 'completed';
	}
	my $u = $self->in_progress($pid);
	for my $x (values %$u)
	{
		$burn += $x->{amount} if $x->{h} == $last && !$self->{res}{$pid}{ $x->{rid} };
	}
	return $burn;
}

# ----------------------------------------------------------------------------------------------
# credit lots (README "Credit lots and refunds"): every completed deposit and auto-recharge is
# a paid lot (priority 50, no expiry, every kind), every grant a promotional one.  A usage hour is
# paid from the lots that may pay for it (its kind among theirs, not expired when the hour
# began) in draw-down order: lowest priority, soonest expiry (none last), promotional before
# paid, oldest.  What pending refunds hold of a lot no usage draws on.

our @KINDS = qw(instance volume api);

sub _add_lot
{
	my ($self, $pid, $tid, $kind, $amount, $prio, $expires, $kinds) = @_;
	push @{ $self->{lots}{$pid} },
	  { tid => $tid, kind => $kind, amount => $amount, remaining => $amount, used => 0, held => 0, prio => $prio,
		expires => $expires, kinds => { map { $_ => 1 } @{ $kinds // \@KINDS } }, all_kinds => !$kinds,
		created => $self->{now} };
}

sub _lot { my ($self, $pid, $tid) = @_; return (grep { $_->{tid} == $tid } @{ $self->{lots}{$pid} // [] })[0]; }

sub _lots_in_order
{
	my ($self, $pid) = @_;
	my $inf = 9**99;
	return sort {
		$a->{prio} <=> $b->{prio} || ($a->{expires} // $inf) <=> ($b->{expires} // $inf)
		  || ($a->{kind} eq 'paid') <=> ($b->{kind} eq 'paid')
		  || $a->{created} <=> $b->{created} || $a->{tid} <=> $b->{tid}
	} grep { $_->{remaining} > 0 } @{ $self->{lots}{$pid} // [] };
}

# The kind of usage a resource id stands for: its instance or volume, else API.
sub _kind_of
{
	my ($self, $pid, $rid) = @_;
	my $r = $self->{res}{$pid}{$rid};
	return $r ? $r->{kind} : 'api';
}

# Takes charge, an hour (beginning at h) of usage of kind, from the lots (in order) whose
# left amounts are in %$left; returns what they paid and, per lot, what it gave.
sub _draw_from
{
	my ($lots, $left, $h, $kind, $charge) = @_;
	my $paid = 0;
	my %gave;
	for my $l (@$lots)
	{
		last if $paid >= $charge;
		next unless $l->{kinds}{$kind} && (!defined $l->{expires} || $l->{expires} > $h) && $left->{ $l->{tid} } > 0;
		my $take = $left->{ $l->{tid} } < $charge - $paid ? $left->{ $l->{tid} } : $charge - $paid;
		$left->{ $l->{tid} } -= $take;
		$gave{ $l->{tid} } = $take;
		$paid += $take;
	}
	return ($paid, \%gave);
}

# The hourly deduction's draw: pays a usage hour from the project's lots; returns what they paid.
sub _draw
{
	my ($self, $pid, $h, $kind, $charge) = @_;
	my @lots = $self->_lots_in_order($pid);
	my %left = map { $_->{tid} => $_->{remaining} - $_->{held} } @lots;
	my ($paid, $gave) = _draw_from(\@lots, \%left, $h, $kind, $charge);
	for my $l (@lots)
	{
		my $g = $gave->{ $l->{tid} } or next;
		$self->{stats}{'hours paid by a lot that expired during them'}++
		  if defined $l->{expires} && $l->{expires} < $h + $HOUR;
		$l->{remaining} -= $g;
		$l->{used} += $g;
		$l->{ended} = 'used' if $l->{remaining} == 0;
	}
	return $paid;
}

# A project's active lots in order, and what each has left for usage once the usage accrued and
# not yet deducted has drawn on them as the deduction will ("tid -> left").
sub standing
{
	my ($self, $pid) = @_;
	my @lots = $self->_lots_in_order($pid);
	my %left = map { $_->{tid} => $_->{remaining} - $_->{held} } @lots;
	for my $x ($self->_accrued_in_order($pid))
	{
		_draw_from(\@lots, \%left, $x->{h}, $self->_kind_of($pid, $x->{rid}), $x->{amount}) if $x->{amount} > 0;
	}
	return (\@lots, \%left);
}

# What the lots that may pay for usage of kind beginning at as_of have left after the accrued usage.
sub spendable
{
	my ($self, $pid, $kind, $as_of) = @_;
	my ($lots, $left) = $self->standing($pid);
	my $sum = 0;
	for my $l (@$lots)
	{
		$sum += $left->{ $l->{tid} } if $l->{kinds}{$kind} && (!defined $l->{expires} || $l->{expires} > $as_of);
	}
	return $sum;
}

# Whether some active lot expires, pays only for some kinds or is held by a refund.
sub special
{
	my ($self, $pid) = @_;
	return scalar grep { $_->{remaining} > 0 && (defined $_->{expires} || !$_->{all_kinds} || $_->{held} > 0) }
	  @{ $self->{lots}{$pid} // [] };
}

# Expiry: once every usage hour that began before a lot's expires_at is deducted (its last
# such hour has ended and nothing accrued of those hours is left), what is left of it leaves the
# balance as one expiry transaction dated expires_at.  A balance that reaches zero so is cut off;
# returns those projects.
sub _expire_lots
{
	my $self = shift;
	my $cur  = hour_of($self->{now});
	my @cut;
	for my $pid (sort { $a <=> $b } keys %{ $self->{lots} })
	{
		my @due = grep { $_->{remaining} > 0 && defined $_->{expires} && hour_of($_->{expires} - 1) + $HOUR <= $cur }
		  @{ $self->{lots}{$pid} };
		next unless @due;
		my @accrued = values %{ $self->in_progress($pid) };
		my $acct   = $self->{acct}{$pid};
		my $before = $acct->{balance};
		for my $l (sort { $a->{tid} <=> $b->{tid} } @due)
		{
			my $until = hour_of($l->{expires} - 1) + $HOUR;
			next if grep { $_->{h} < $until } @accrued;
			my $tid = $self->_new_tid('expiry', $pid, $l->{tid});
			$self->{txns}{$tid} = { tid => $tid, pid => $pid, type => 'expiry', status => 'completed',
				amount => -$l->{remaining}, method => undef, created => $l->{expires}, lot => $l->{tid} };
			$self->{touched}{$tid} = 1;
			$acct->{balance} -= $l->{remaining};
			$l->{expired} = $l->{remaining};
			$l->{remaining} = 0;
			$l->{ended} = 'expired';
			$self->{stats}{'lots expired'}++;
		}
		next unless $before > 0 && $acct->{balance} == 0 && !$acct->{depleted};
		$self->_cut_off($pid);
		push @cut, $pid;
	}
	return @cut;
}

# Zero balance kind by kind, as of now, for a project whose lots are not all alike or that is
# cut off: instances are cut off when nothing that may pay for this hour of an instance is left
# after the accrued usage, volumes likewise (and locked volumes are made available again when
# something is); with nothing left for either, the project is cut off (balance_depleted); a cut
# off project is lifted once something is left for its instances or volumes.  Returns whether
# it acted.
sub _judge_kinds
{
	my ($self, $pid) = @_;
	my $acct = $self->{acct}{$pid};
	return 0 unless $acct->{depleted} || $self->special($pid);
	my $h  = hour_of($self->{now});
	my $fi = $self->spendable($pid, 'instance', $h);
	my $fv = $self->spendable($pid, 'volume', $h);
	if ($acct->{depleted})
	{
		return 0 unless $fi > 0 || $fv > 0;
		$acct->{depleted} = 0;
		$self->{stats}{'cut-offs lifted'}++;
		$self->_restore($pid) if $fv > 0;
		return 1;
	}
	if ($fi <= 0 && $fv <= 0)
	{
		$self->_cut_off($pid);
		$self->{stats}{'cut-offs by kind: whole project'}++;
		return 1;
	}
	my $acted = 0;
	$acted += $self->_cut_off_kind($pid, 'instance') if $fi <= 0;
	if ($fv <= 0) { $acted += $self->_cut_off_kind($pid, 'volume'); }
	else          { $acted += $self->_restore($pid); }
	return $acted ? 1 : 0;
}

# For a failure report: each active lot of a project (in order), what it has left after the
# accrued usage, and the accrued hours.
sub describe_lots
{
	my ($self, $pid) = @_;
	my ($lots, $left) = $self->standing($pid);
	my $h = hour_of($self->{now});
	return "project $pid at " . fmt_ts($self->{now}) . ": balance $self->{acct}{$pid}{balance}, "
	  . ($self->{acct}{$pid}{depleted} ? 'cut off' : 'not cut off')
	  . ", left for instances " . $self->spendable($pid, 'instance', $h) . ', for volumes '
	  . $self->spendable($pid, 'volume', $h) . ', available ' . $self->available($pid) . "\n"
	  . join('', map {
			"    lot $_->{tid} $_->{kind} prio $_->{prio} remaining $_->{remaining} held $_->{held} left $left->{ $_->{tid} }"
			  . (defined $_->{expires} ? ' expires ' . fmt_ts($_->{expires}) : '')
			  . ($_->{all_kinds} ? '' : ' for ' . join(',', sort keys %{ $_->{kinds} })) . "\n"
		} @$lots)
	  . join('', map { "    accrued " . fmt_ts($_->{h}) . " $_->{rid} ($_->{tid}) $_->{amount}\n" } $self->_accrued_in_order($pid));
}

# The lots view: project|transaction|kind|amount|remaining|state|priority|expires_at|applies_to.
sub lot_lines
{
	my $self = shift;
	return map {
		my $pid = $_;
		map {
			# (README: amount = remaining + used + refunded + expired)
			die "model: lot $_->{tid} does not add up" if $_->{amount} != $_->{remaining} + $_->{used}
			  + ($_->{refunded} // 0) + ($_->{expired} // 0);
			join('|', $pid, $_->{tid}, $_->{kind}, $_->{amount}, $_->{remaining}, $_->{ended} // 'active', $_->{prio},
				$_->{expires} // '', $_->{all_kinds} ? '' : join(',', sort keys %{ $_->{kinds} }))
		} @{ $self->{lots}{$pid} }
	} keys %{ $self->{lots} };
}

# ----------------------------------------------------------------------------------------------
# zero balance and auto-recharge

sub _cut_off
{
	my ($self, $pid) = @_;
	$self->_cut_off_kind($pid, 'instance', 'volume');
	$self->_event($pid, 'balance_depleted');
	$self->{acct}{$pid}{depleted} = 1;
	$self->{stats}{'cut-offs'}++;
}

# Cuts off the project's billing resources of the kinds given (their time booked): instances
# terminated, volumes locked.  Returns how many.
sub _cut_off_kind
{
	my ($self, $pid, @kinds) = @_;
	my %k = map { $_ => 1 } @kinds;
	my $n = 0;
	for my $rid (sort keys %{ $self->{live}{$pid} })
	{
		my $r = $self->{live}{$pid}{$rid};
		next unless ($r->{state} eq 'running' || $r->{state} eq 'available') && $k{ $r->{kind} };
		$self->_book($pid, $r, $self->{now});
		if ($r->{kind} eq 'instance')
		{
			$self->_set_state($pid, $r, 'terminated');
			$self->_event($pid, 'instance_terminated', $rid);
		}
		else
		{
			$self->_set_state($pid, $r, 'inaccessible');
			$self->_event($pid, 'volume_inaccessible', $rid);
		}
		$n++;
	}
	$self->{stats}{'cut-offs by kind: resources'} += $n if @kinds == 1;
	return $n;
}

# Makes the project's locked volumes available again; returns how many.
sub _restore
{
	my ($self, $pid) = @_;
	my $n = 0;
	for my $rid (sort keys %{ $self->{live}{$pid} })
	{
		my $r = $self->{live}{$pid}{$rid};
		next unless $r->{state} eq 'inaccessible';
		$self->_set_state($pid, $r, 'available');
		$self->_event($pid, 'volume_available', $rid);
		$n++;
	}
	return $n;
}

# Moves a resource to a new state as of now: it bills (from now) while running or available.
# Keeps the sets the hot paths read: active (not terminated or deleted: they never change
# again), live (running, available, inaccessible), and the list of changes.
sub _set_state
{
	my ($self, $pid, $r, $state) = @_;
	my $rid = $r->{rid};
	$r->{state}     = $state;
	$r->{since}     = $self->{now};
	$r->{live_from} = ($state eq 'running' || $state eq 'available') ? $self->{now} : undef;
	$self->{res}{$pid}{$rid} = $r;
	if ($state eq 'terminated' || $state eq 'deleted') { delete $self->{active}{$pid}{$rid}; }
	else                                               { $self->{active}{$pid}{$rid} = $r; }
	if ($state eq 'stopped' || !$self->{active}{$pid}{$rid}) { delete $self->{live}{$pid}{$rid}; }
	else                                                     { $self->{live}{$pid}{$rid} = $r; }
	push @{ $self->{changes} }, [ $pid, $r ];
}

sub pending_auto_recharge
{
	my ($self, $pid) = @_;
	for my $t (values %{ $self->{pending} })
	{
		return $t if $t->{pid} == $pid && $t->{type} eq 'auto_recharge' && $t->{status} eq 'pending';
	}
	return undef;
}

sub _new_charge
{
	my ($self, $tid, $pid, $type, $amount, $mid, $key) = @_;
	$self->{txns}{$tid} = $self->{pending}{$tid} = {
		tid => $tid, pid => $pid, type => $type, status => 'pending', amount => $amount,
		method => $mid, created => $self->{now}, key => $key,
	};
	$self->{touched}{$tid} = 1;
	$self->_event($pid, 'charge_requested', undef, $tid, "$type/$amount/$mid/$self->{methods}{$mid}{ref}");
}

# Starts the due auto-recharges; returns the projects recharged.  (%$avail: the available
# balances to judge by, where not as of now.)
sub _auto_recharges
{
	my ($self, $avail) = @_;
	my @done;
	for my $pid (sort { $a <=> $b } keys %{ $self->{auto} })
	{
		my $c = $self->{auto}{$pid};
		next unless $c->{enabled} && $c->{armed};
		next if $self->pending_auto_recharge($pid);
		next unless ($avail->{$pid} // $self->available($pid)) < $c->{threshold};
		my $mid = $c->{method} // $self->default_method($pid);
		next unless defined $mid;
		$self->_new_charge($self->_new_tid('auto_recharge', $pid), $pid, 'auto_recharge', $c->{amount}, $mid);
		$self->{stats}{'auto-recharges'}++;
		push @done, $pid;
	}
	return @done;
}

# ----------------------------------------------------------------------------------------------
# spending controls (README: "Spending limits and alerts")
#
# controls: pid -> { max_burn, min_runway, daily, monthly, on_budget, below_balance,
# below_runway (intervals in seconds), daily_reached, monthly_reached (period starts),
# balance_low, runway_low }

# Start of the UTC day and month of t.
sub day_start { my $t = shift; my $d = 86_400_000_000; return $t - ($t % $d); }

sub month_start
{
	my $t = shift;
	my @g = gmtime(int($t / 1_000_000));
	return Time::Local::timegm(0, 0, 0, 1, $g[4], $g[5] + 1900) * 1_000_000;
}

# Charges (collected and uncollected) of the project's usage hours that begin at or after
# since: completed hours and those accumulating.
sub spent_since
{
	my ($self, $pid, $since) = @_;
	my $sum = 0;
	my $charged = $self->{charged}{$pid} // {};
	my $month = month_start($self->{now});
	for my $h (keys %$charged)
	{
		# (hours before this month never count again: since is this day or this month)
		if ($h < $month) { delete $charged->{$h}; next; }
		$sum += $charged->{$h} if $h >= $since;
	}
	for my $x (values %{ $self->in_progress($pid) })
	{
		$sum += $x->{amount} if $x->{h} >= $since;
	}
	return $sum;
}

sub _below_balance { my ($avail, $line) = @_; return defined $line && $avail < $line ? 1 : 0; }

# hours_remaining (available / burn) below a line of secs seconds; never with nothing burning.
sub _below_runway
{
	my ($avail, $burn, $secs) = @_;
	return defined $secs && $burn > 0 && $avail * 3600 < $burn * $secs ? 1 : 0;
}

sub _hit { my ($spent, $budget) = @_; return defined $budget && $spent >= $budget ? 1 : 0; }

# Where a watched project stands now.
sub spending_position
{
	my ($self, $pid) = @_;
	return {
		available => $self->available($pid), burn => $self->burn_rate($pid),
		today => $self->spent_since($pid, day_start($self->{now})),
		month => $self->spent_since($pid, month_start($self->{now})),
	};
}

# Queues the events the controls of the projects given call for and stops instances over a
# budget that stops; returns the projects acted on.
sub _act_on_spending
{
	my ($self, @pids) = @_;
	my @acted;
	for my $pid (@pids)
	{
		my $c = $self->{controls}{$pid} or next;
		my $p = $self->spending_position($pid);
		my ($ds, $ms) = (day_start($self->{now}), month_start($self->{now}));
		my $bl = _below_balance($p->{available}, $c->{below_balance});
		my $rl = _below_runway($p->{available}, $p->{burn}, $c->{below_runway});
		my $dh = _hit($p->{today}, $c->{daily});
		my $mh = _hit($p->{month}, $c->{monthly});
		my $acted = 0;
		if ($dh && ($c->{daily_reached} // -1) != $ds)
		{
			$self->_event($pid, 'budget_reached');
			$c->{daily_reached} = $ds;
			$acted = 1;
		}
		if ($mh && ($c->{monthly_reached} // -1) != $ms)
		{
			$self->_event($pid, 'budget_reached');
			$c->{monthly_reached} = $ms;
			$acted = 1;
		}
		if ($bl && !$c->{balance_low}) { $self->_event($pid, 'balance_low'); $acted = 1; }
		if ($rl && !$c->{runway_low})  { $self->_event($pid, 'runway_low');  $acted = 1; }
		if (($c->{balance_low} || $c->{runway_low}) && !$bl && !$rl)
		{
			$self->_event($pid, 'balance_recovered');
			$acted = 1;
			$self->{stats}{'alerts recovered'}++;
		}
		$self->{stats}{'alerts'}++ if $bl && !$c->{balance_low} || $rl && !$c->{runway_low};
		$self->{stats}{'budgets reached'}++ if $acted && ($dh || $mh);
		@{$c}{qw(balance_low runway_low)} = ($bl, $rl);
		if ($c->{on_budget} eq 'stop' && ($dh || $mh))
		{
			for my $rid (sort keys %{ $self->{live}{$pid} // {} })
			{
				my $r = $self->{live}{$pid}{$rid};
				next unless $r->{kind} eq 'instance' && $r->{state} eq 'running';
				$self->_book($pid, $r, $self->{now});
				$self->_set_state($pid, $r, 'stopped');
				$self->_event($pid, 'instance_stopped', $rid);
				$self->{stats}{'instances stopped by a budget'}++;
				$acted = 1;
			}
		}
		push @acted, $pid if $acted;
	}
	return @acted;
}

# The refusal of a start, attach or rate change that breaks the project's limits (old: the
# resource's rate while it bills); a start that finds a budget reached and not yet announced
# announces it (and stops, under 'stop', what runs).
sub _start_limits_err
{
	my ($self, $pid, $rid, $kind, $rate, $old) = @_;
	my $c = $self->{controls}{$pid};
	return undef unless $c && grep { defined } @{$c}{qw(max_burn min_runway daily monthly)};
	my $raises = $rate > ($old // 0);
	if (defined $c->{max_burn} && $raises)
	{
		my $rates = 0;
		for my $r (values %{ $self->{live}{$pid} // {} })
		{
			$rates += $r->{rate} if $r->{rid} ne $rid && ($r->{state} eq 'running' || $r->{state} eq 'available');
		}
		if ($rates + $rate > $c->{max_burn})
		{
			$self->{stats}{'starts refused: max_burn_rate'}++;
			return _err('55000', 'above max_burn_rate');
		}
	}
	return undef unless grep { defined } @{$c}{qw(min_runway daily monthly)};
	my $p = $self->spending_position($pid);
	if (defined $c->{min_runway} && $raises
		&& _below_runway($p->{available}, $p->{burn} - ($old // 0) + $rate, $c->{min_runway}))
	{
		$self->{stats}{'starts refused: min_runway'}++;
		return _err('55000', 'below min_runway');
	}
	my ($dh, $mh) = (_hit($p->{today}, $c->{daily}), _hit($p->{month}, $c->{monthly}));
	if ($kind eq 'instance' && $c->{on_budget} eq 'stop' && $raises && ($dh || $mh))
	{
		$self->{stats}{'starts refused: budget'}++;
		return _err('55000', 'budget reached');
	}
	$self->_act_on_spending($pid)
	  if $dh && ($c->{daily_reached} // -1) != day_start($self->{now})
	  || $mh && ($c->{monthly_reached} // -1) != month_start($self->{now});
	return undef;
}

# Saves a project's controls, or drops them when nothing is set; then checks it.
sub _save_controls
{
	my ($self, $pid, $c) = @_;
	if (grep { defined } @{$c}{qw(max_burn min_runway daily monthly below_balance below_runway)})
	{
		$self->{controls}{$pid} = $c;
		$self->_act_on_spending($pid);
	}
	else
	{
		delete $self->{controls}{$pid};
	}
	return { value => undef };
}

sub _optional_positive_err
{
	my ($name, $v) = @_;
	return defined $v ? _positive_err($name, $v) : undef;
}

sub _interval_err
{
	my ($name, $v) = @_;
	return defined $v && $v <= 0 ? _err('22023', "$name is not a positive interval") : undef;
}

sub op_configure_limits
{
	my ($self, $op) = @_;
	my $pid = $op->{pid};
	my $e = $self->_account_err($pid) // _optional_positive_err('max_burn_rate', $op->{max_burn})
	  // _interval_err('min_runway', $op->{min_runway}) // _optional_positive_err('daily_budget', $op->{daily})
	  // _optional_positive_err('monthly_budget', $op->{monthly});
	return $e if $e;
	return _err('22004', 'on_budget is null') unless defined $op->{on_budget};
	return _err('22023', "on_budget $op->{on_budget}") unless $op->{on_budget} =~ /^(alert|stop)$/;
	my $old = $self->{controls}{$pid} // { balance_low => 0, runway_low => 0 };
	my %c = (%$old, on_budget => $op->{on_budget});
	$c{$_} = $op->{$_} for qw(max_burn min_runway daily monthly);
	for (qw(daily monthly))
	{
		delete $c{"${_}_reached"} unless defined $old->{$_} && defined $c{$_} && $old->{$_} == $c{$_};
	}
	return $self->_save_controls($pid, \%c);
}

sub op_configure_alerts
{
	my ($self, $op) = @_;
	my $pid = $op->{pid};
	my $e = $self->_account_err($pid) // _optional_positive_err('below_balance', $op->{below_balance})
	  // _interval_err('below_runway', $op->{below_runway});
	return $e if $e;
	my $old = $self->{controls}{$pid} // { on_budget => 'alert' };
	my %c = (%$old, below_balance => $op->{below_balance}, below_runway => $op->{below_runway});
	$c{balance_low} = $old->{balance_low} && defined $op->{below_balance} ? 1 : 0;
	$c{runway_low}  = $old->{runway_low} && defined $op->{below_runway} ? 1 : 0;
	return $self->_save_controls($pid, \%c);
}

# One line per watched project, as the harness formats spending_overview.
sub spending_lines
{
	my $self = shift;
	my @l;
	for my $pid (sort { $a <=> $b } keys %{ $self->{controls} })
	{
		my $c = $self->{controls}{$pid};
		my $p = $self->spending_position($pid);
		my $state = _below_balance($p->{available}, $c->{below_balance}) ? 'balance_low'
		  : _below_runway($p->{available}, $p->{burn}, $c->{below_runway}) ? 'runway_low' : 'ok';
		push @l, join('|', $pid, $p->{today}, $p->{month},
			(_hit($p->{today}, $c->{daily}) || _hit($p->{month}, $c->{monthly})) ? 't' : 'f', $state);
	}
	return @l;
}

# ----------------------------------------------------------------------------------------------
# operations: each returns { value => ... } or { err => SQLSTATE, why => ... } and, when it
# fails, changes nothing.  $ret is what the database returned (used only for new ids).

sub apply
{
	my ($self, $op, $ret, $lookup) = @_;
	$self->{new_events} = [];
	$self->{touched}    = {};
	$self->{lookup}     = $lookup // sub { undef };
	my $m = "op_$op->{op}";
	return $self->$m($op, $ret);
}

sub op_set_clock
{
	my ($self, $op) = @_;
	die "model: the clock only moves forward" if $op->{to} < $self->{now};
	$self->{now} = $op->{to};
	return { value => undef };
}

sub op_set_minimum_deposit
{
	my ($self, $op) = @_;
	$self->{min_deposit} = $op->{amount};
	return { value => undef };
}

sub op_open_account
{
	my ($self, $op) = @_;
	return _err('22004', 'project_id is null') unless defined $op->{pid};
	$self->{acct}{ $op->{pid} } //= { balance => 0, depleted => 0 };
	$self->{res}{ $op->{pid} } //= {};
	$self->{active}{ $op->{pid} } //= {};
	$self->{live}{ $op->{pid} } //= {};
	return { value => undef };
}

sub op_add_payment_method
{
	my ($self, $op, $ret) = @_;
	my ($pid, $ref, $label, $def) = @{$op}{qw(pid ref label make_default)};
	my $e = _text_err('provider_ref', $ref, 200, 0) // _text_err('label', $label, 200, 1);
	return $e if $e;
	return _err('22004', 'make_default is null') unless defined $def;
	$e = $self->_account_err($pid);
	return $e if $e;
	my ($m) = grep { $_->{pid} == $pid && !$_->{removed} && $_->{ref} eq $ref } values %{ $self->{methods} };
	if (!$m)
	{
		my $mid = defined $ret && !$self->{methods}{$ret} ? $ret : ++$self->{synthetic};
		$m = $self->{methods}{$mid} = { mid => $mid, pid => $pid, ref => $ref, default => 0, removed => 0 };
	}
	if ($def)
	{
		$_->{default} = 0 for grep { $_->{pid} == $pid } values %{ $self->{methods} };
		$m->{default} = 1;
	}
	return { value => $m->{mid} };
}

sub op_set_default_payment_method
{
	my ($self, $op) = @_;
	my ($pid, $mid) = @{$op}{qw(pid mid)};
	my $e = $self->_account_err($pid);
	return $e if $e;
	return _err('22004', 'method_id is null') unless defined $mid;
	my $m = $self->_active_method($pid, $mid) or return _err('P0002', "no active method $mid");
	$_->{default} = 0 for grep { $_->{pid} == $pid } values %{ $self->{methods} };
	$m->{default} = 1;
	return { value => undef };
}

sub op_remove_payment_method
{
	my ($self, $op) = @_;
	my ($pid, $mid) = @{$op}{qw(pid mid)};
	my $e = $self->_account_err($pid);
	return $e if $e;
	return _err('22004', 'method_id is null') unless defined $mid;
	my $m = $self->_active_method($pid, $mid) or return _err('P0002', "no active method $mid");
	my $c = $self->{auto}{$pid};
	# (README: 55006 when removing a method that auto-recharge charges: the configured one, or
	# the default when none is configured)
	return _err('55006', "method $mid is used by auto-recharge")
	  if $c && $c->{enabled} && (defined $c->{method} ? $c->{method} == $mid : $m->{default});
	$m->{removed} = 1;
	$m->{default} = 0;
	return { value => undef };
}

sub op_add_credits
{
	my ($self, $op, $ret) = @_;
	my ($pid, $amount, $mid, $key) = @{$op}{qw(pid amount mid key)};
	my $e = $self->_account_err($pid) // _positive_err('amount', $amount)
	  // _text_err('idempotency_key', $key, 200, 1);
	return $e if $e;
	if (defined(my $tid = $self->_key_tid($pid, $key)))
	{
		my $t = $self->{txns}{$tid};
		return _err('23505', "key $key was used with other arguments")
		  if $t->{type} ne 'deposit' || $t->{amount} != $amount || (defined $mid && $t->{method} != $mid);
		return { value => $tid };
	}
	return _err('22023', 'below the minimum deposit') if $amount < $self->{min_deposit};
	if (defined $mid)
	{
		$self->_active_method($pid, $mid) or return _err('P0002', "no active method $mid");
	}
	else
	{
		$mid = $self->default_method($pid) // return _err('55000', 'no default payment method');
	}
	my $tid = defined $ret && !$self->{txns}{$ret} && !$self->{usage_tids}{$ret} ? $ret : ++$self->{synthetic};
	$self->_new_charge($tid, $pid, 'deposit', $amount, $mid, $key);
	$self->{dep_keys}{$pid}{$key} = $tid if defined $key;
	return { value => $tid };
}

# The transaction an idempotency key of the project names (deposits, grants and refunds share
# the keys of a project).
sub _key_tid
{
	my ($self, $pid, $key) = @_;
	return undef unless defined $key;
	return $self->{dep_keys}{$pid}{$key} // $self->{grant_keys}{$pid}{$key} // $self->{refund_keys}{$pid}{$key};
}

# The kinds of applies_to as a grant keeps them: sorted, no repeats; undef: all kinds.
sub _norm_kinds
{
	my $k = shift;
	return undef unless $k;
	my %s = map { $_ => 1 } @$k;
	return [ sort keys %s ];
}

# grant_credits(pid, amount, expires_at, priority, applies_to, description, key): a promotional
# lot, completed at once, paying for the usage hours of the kinds in applies_to (null: all) that
# begin before expires_at (null: never).
sub op_grant_credits
{
	my ($self, $op, $ret) = @_;
	my ($pid, $amount, $prio, $key, $expires) = @{$op}{qw(pid amount priority key expires)};
	my $e = $self->_account_err($pid) // _positive_err('amount', $amount);
	return $e if $e;
	return _err('22004', 'priority is null') unless defined $prio;
	$e = _text_err('description', $op->{description}, 200, 1) // _text_err('idempotency_key', $key, 200, 1);
	return $e if $e;
	return _err('22023', 'priority outside 0-100') if $prio < 0 || $prio > 100;
	if ($op->{applies_to})
	{
		return _err('22023', 'applies_to is empty') unless @{ $op->{applies_to} };
		for my $k (@{ $op->{applies_to} })
		{
			return _err('22023', 'unknown kind in applies_to') unless defined $k && grep { $_ eq $k } @KINDS;
		}
	}
	my $kinds = _norm_kinds($op->{applies_to});
	if (defined(my $tid = $self->_key_tid($pid, $key)))
	{
		# (a retry: the key is looked up before expires_at is judged)
		my $t = $self->{txns}{$tid};
		return _err('23505', "key $key was used with other arguments")
		  if $t->{type} ne 'grant' || $t->{amount} != $amount || $t->{prio} != $prio
		  || ($t->{expires} // -1) != ($expires // -1)
		  || join(',', @{ $t->{kinds} // [] }) ne join(',', @{ $kinds // [] }) || !$t->{kinds} != !$kinds;
		return { value => $tid };
	}
	return _err('22023', 'expires_at is not in the future') if defined $expires && $expires <= $self->{now};
	my $tid = defined $ret && !$self->{txns}{$ret} && !$self->{usage_tids}{$ret} ? $ret : ++$self->{synthetic};
	$self->{txns}{$tid} = { tid => $tid, pid => $pid, type => 'grant', status => 'completed', amount => $amount,
		method => undef, created => $self->{now}, key => $key, prio => $prio, expires => $expires, kinds => $kinds };
	$self->{touched}{$tid} = 1;
	$self->{grant_keys}{$pid}{$key} = $tid if defined $key;
	$self->{acct}{$pid}{balance} += $amount;
	$self->_add_lot($pid, $tid, 'promotional', $amount, $prio, $expires, $kinds);
	$self->_judge_kinds($pid);
	$self->{stats}{grants}++;
	$self->{stats}{'grants: expiring'}++ if defined $expires;
	$self->{stats}{'grants: for some kinds'}++ if $kinds;
	return { value => $tid };
}

# refund_deposit(pid, deposit, amount, reason, key): a pending refund of the unused part of a paid
# lot (amount null: all of it), which holds its amount on the lot until completed or failed.
sub op_refund_deposit
{
	my ($self, $op, $ret) = @_;
	my ($pid, $dep, $amount, $key) = @{$op}{qw(pid tid amount key)};
	my $e = $self->_account_err($pid);
	return $e if $e;
	return _err('22004', 'transaction_id is null') unless defined $dep;
	$e = (defined $amount ? _positive_err('amount', $amount) : undef) // _text_err('reason', $op->{text}, 200, 1)
	  // _text_err('idempotency_key', $key, 200, 1);
	return $e if $e;
	if (defined(my $tid = $self->_key_tid($pid, $key)))
	{
		my $t = $self->{txns}{$tid};
		return _err('23505', "key $key was used with other arguments")
		  if $t->{type} ne 'refund' || $t->{lot} != $dep || (defined $amount && -$t->{amount} != $amount);
		return { value => $tid };
	}
	my $d = $self->{txns}{$dep};
	return _err('P0002', "project $pid has no deposit $dep") unless $d && $d->{pid} == $pid;
	return _err('55000', 'grants are not refundable') if $d->{type} eq 'grant';
	return _err('55000', "cannot refund a $d->{status} $d->{type}")
	  unless ($d->{type} eq 'deposit' || $d->{type} eq 'auto_recharge') && $d->{status} eq 'completed';
	my $may = $self->refundable($pid, $dep);
	return _err('55000', "deposit $dep has $may that may be refunded") if $may <= 0 || defined $amount && $amount > $may;
	$amount //= $may;
	my $tid = defined $ret && !$self->{txns}{$ret} && !$self->{usage_tids}{$ret} ? $ret : ++$self->{synthetic};
	$self->{txns}{$tid} = $self->{pending}{$tid} = { tid => $tid, pid => $pid, type => 'refund', status => 'pending',
		amount => -$amount, method => $d->{method}, created => $self->{now}, key => $key, lot => $dep };
	$self->{touched}{$tid} = 1;
	$self->{refund_keys}{$pid}{$key} = $tid if defined $key;
	$self->_lot($pid, $dep)->{held} += $amount;
	$self->_event($pid, 'refund_requested', undef, $tid, "$amount/$dep/$d->{method}/$self->{methods}{ $d->{method} }{ref}");
	$self->_judge_kinds($pid);
	$self->{stats}{'refunds requested'}++;
	$self->{stats}{'refunds requested: all that may be'}++ if $amount == $may;
	return { value => $tid };
}

# What may be refunded of a paid lot: what it has left once the accrued usage has drawn on it.
sub refundable
{
	my ($self, $pid, $tid) = @_;
	my ($lots, $left) = $self->standing($pid);
	return $left->{$tid} // 0;
}

sub _settle_refund
{
	my ($self, $op, $complete) = @_;
	my ($pid, $tid) = @{$op}{qw(pid tid)};
	return _err('22004', 'project_id is null') unless defined $pid;
	return _err('22004', 'transaction_id is null') unless defined $tid;
	my $e = _text_err('reason', $op->{text}, 2000, 1);
	return $e if $e;
	my $t = $self->{txns}{$tid};
	return _err('P0002', "project $pid has no refund $tid") unless $t && $t->{type} eq 'refund' && $t->{pid} == $pid;
	return _err('55000', "refund $tid is $t->{status}") unless $t->{status} eq 'pending';
	my $l = $self->_lot($pid, $t->{lot});
	my $acct = $self->{acct}{$pid};
	$t->{status} = $complete ? 'completed' : 'failed';
	delete $self->{pending}{$tid};
	$self->{touched}{$tid} = 1;
	$l->{held} += $t->{amount};
	if ($complete)
	{
		my $before = $acct->{balance};
		$l->{remaining} += $t->{amount};
		$l->{refunded} += -$t->{amount};
		$l->{ended} = 'refunded' if $l->{remaining} == 0;
		$acct->{balance} += $t->{amount};
		$self->_cut_off($pid) if $before > 0 && $acct->{balance} == 0 && !$acct->{depleted};
	}
	$self->_judge_kinds($pid);
	$self->{stats}{ $complete ? 'refunds completed' : 'refunds failed' }++;
	return { value => $complete ? $acct->{balance} : undef };
}

sub op_complete_refund { my ($s, $op) = @_; return $s->_settle_refund($op, 1); }
sub op_fail_refund     { my ($s, $op) = @_; return $s->_settle_refund($op, 0); }

sub _settle_err
{
	my ($self, $op, $textname, $max) = @_;
	my ($pid, $tid) = @{$op}{qw(pid tid)};
	return _err('22004', 'project_id is null') unless defined $pid;
	return _err('22004', 'transaction_id is null') unless defined $tid;
	my $e = _text_err($textname, $op->{text}, $max, 1);
	return $e if $e;
	my $t = $self->{txns}{$tid};
	return _err('P0002', "project $pid has no deposit $tid")
	  unless $t && $t->{pid} == $pid && ($t->{type} eq 'deposit' || $t->{type} eq 'auto_recharge');
	return _err('55000', "deposit $tid is $t->{status}") unless $t->{status} eq 'pending';
	return undef;
}

sub op_complete_deposit
{
	my ($self, $op) = @_;
	my $e = $self->_settle_err($op, 'invoice_url', 2048);
	return $e if $e;
	my $pid = $op->{pid};
	my $t   = $self->{txns}{ $op->{tid} };
	my $acct = $self->{acct}{$pid};
	$t->{status}  = 'completed';
	$t->{invoice} = $op->{text};
	delete $self->{pending}{ $t->{tid} };
	$self->{touched}{ $t->{tid} } = 1;
	$acct->{balance} += $t->{amount};
	$self->_add_lot($pid, $t->{tid}, 'paid', $t->{amount}, 50);
	$self->{auto}{$pid}{armed} = 1 if $self->{auto}{$pid};
	$self->_judge_kinds($pid);
	$self->_act_on_spending($pid);
	return { value => $acct->{balance} };
}

sub op_fail_deposit
{
	my ($self, $op) = @_;
	my $e = $self->_settle_err($op, 'reason', 2000);
	return $e if $e;
	my $t = $self->{txns}{ $op->{tid} };
	$t->{status} = 'failed';
	delete $self->{pending}{ $t->{tid} };
	$self->{touched}{ $t->{tid} } = 1;
	$self->{auto}{ $op->{pid} }{armed} = 0 if $t->{type} eq 'auto_recharge' && $self->{auto}{ $op->{pid} };
	return { value => undef };
}

sub _activate
{
	my ($self, $op, $kind) = @_;
	my ($pid, $rid, $rate) = @{$op}{qw(pid rid rate)};
	my $e = $self->_account_err($pid) // _text_err('resource_id', $rid, 200, 0)
	  // _positive_err('rate_per_hour', $rate);
	return $e if $e;
	# (README: refused while nothing available may pay for that kind)
	return _err('55000', "project $pid has no available balance") if $self->{acct}{$pid}{depleted};
	if ($self->spendable($pid, $kind, $self->{now}) <= 0)
	{
		$self->{stats}{'starts refused: nothing may pay for that kind'}++ if $self->available($pid) > 0;
		return _err('55000', "project $pid has nothing available that may pay for a $kind");
	}
	my $active = $kind eq 'instance' ? 'running' : 'available';
	my $r = $self->{res}{$pid}{$rid};
	if (!$r || $r->{kind} eq $kind
		&& ($r->{state} eq 'stopped' || $r->{state} eq $active && $r->{rate} != $rate))
	{
		my $was_active = $r && $r->{state} eq $active;
		$e = $self->_start_limits_err($pid, $rid, $kind, $rate, $was_active ? $r->{rate} : undef);
		return $e if $e;
		# (a budget stop the check acted on stands: the call changes nothing more)
		return { value => undef } if $was_active && $r->{state} ne $active;
	}
	if (!$r)
	{
		$self->_set_state($pid, { rid => $rid, kind => $kind, rate => $rate }, $active);
	}
	elsif ($r->{kind} ne $kind)
	{
		return _err('42809', "$rid is a $r->{kind}");
	}
	elsif ($r->{state} eq $active)
	{
		if ($r->{rate} != $rate)
		{
			$self->{stats}{'rate changes'}++;
			$self->_book($pid, $r, $self->{now});
			$r->{rate} = $rate;
		}
	}
	elsif ($r->{state} eq 'stopped')
	{
		$r->{rate} = $rate;
		$self->_set_state($pid, $r, 'running');
		$self->{stats}{'restarts'}++;
	}
	else
	{
		return _err('55000', "$kind $rid is $r->{state}");
	}
	return { value => undef };
}

sub _deactivate
{
	my ($self, $op, $kind, $final) = @_;
	my ($pid, $rid) = @{$op}{qw(pid rid)};
	my $e = $self->_account_err($pid) // _text_err('resource_id', $rid, 200, 0);
	return $e if $e;
	my $r = $self->{res}{$pid}{$rid};
	return _err('P0002', "project $pid has no $kind $rid") unless $r;
	return _err('42809', "$rid is a $r->{kind}") if $r->{kind} ne $kind;
	if ($r->{state} eq 'running' || $r->{state} eq 'available' || $r->{state} eq 'inaccessible')
	{
		$self->_book($pid, $r, $self->{now});
		$self->_set_state($pid, $r, $final);
	}
	return { value => undef };
}

sub op_start_instance { my ($s, $op) = @_; return $s->_activate($op, 'instance'); }
sub op_attach_volume  { my ($s, $op) = @_; return $s->_activate($op, 'volume'); }
sub op_stop_instance  { my ($s, $op) = @_; return $s->_deactivate($op, 'instance', 'stopped'); }
sub op_delete_volume  { my ($s, $op) = @_; return $s->_deactivate($op, 'volume', 'deleted'); }

# record_usage; with {at} set, the call's transaction began at that earlier time (a call that
# commits late).
sub op_record_usage
{
	my ($self, $op) = @_;
	my ($pid, $rid, $amount, $key) = @{$op}{qw(pid rid amount key)};
	my $e = $self->_account_err($pid) // _text_err('resource_id', $rid, 200, 0)
	  // _positive_err('amount', $amount) // _text_err('idempotency_key', $key, 200, 1);
	return $e if $e;
	if (defined $key)
	{
		if (my $k = $self->{usage_keys}{$pid}{$key})
		{
			return _err('23505', "usage key $key was used with other arguments")
			  if $k->[0] ne $rid || $k->[1] != $amount;
			return { value => undef };
		}
		$self->{usage_keys}{$pid}{$key} = [ $rid, $amount ];
	}
	push @{ $self->{pending_api} }, [ $pid, $rid, hour_of($op->{at} // $self->{now}), $amount ];
	return { value => undef };
}

sub op_record_usage_batch
{
	my ($self, $op) = @_;
	my ($pids, $rids, $amounts, $keys) = @{$op}{qw(pids rids amounts keys)};
	return _err('22004', 'an array is null') unless $pids && $rids && $amounts;
	my $n = @$pids;
	return _err('2202E', 'arrays of different lengths')
	  if @$rids != $n || @$amounts != $n || ($keys && @$keys != $n);
	for my $i (0 .. $n - 1)
	{
		my $k = $keys ? $keys->[$i] : undef;
		return _err('22023', "element $i is invalid")
		  if !defined $pids->[$i] || !defined $rids->[$i] || !defined $amounts->[$i]
		  || length($rids->[$i]) < 1 || length($rids->[$i]) > 200 || $amounts->[$i] <= 0
		  || $amounts->[$i] > $MAX_AMOUNT
		  || (defined $k && (length($k) < 1 || length($k) > 200));
	}
	for my $p (@$pids)
	{
		return _err('P0002', "unknown project $p") unless $self->{acct}{$p};
	}
	my (%claimed, @take);
	for my $i (0 .. $n - 1)
	{
		my ($p, $r, $a, $k) = ($pids->[$i], $rids->[$i], $amounts->[$i], $keys ? $keys->[$i] : undef);
		if (defined $k)
		{
			my $old = $claimed{$p}{$k} // $self->{usage_keys}{$p}{$k};
			if ($old)
			{
				return _err('23505', "usage key $k was used with other arguments")
				  if $old->[0] ne $r || $old->[1] != $a;
				next;
			}
			$claimed{$p}{$k} = [ $r, $a ];
		}
		push @take, [ $p, $r, hour_of($self->{now}), $a ];
	}
	for my $p (keys %claimed)
	{
		$self->{usage_keys}{$p}{$_} = $claimed{$p}{$_} for keys %{ $claimed{$p} };
	}
	push @{ $self->{pending_api} }, @take;
	return { value => scalar @take };
}

sub op_run_hourly_deductions
{
	my $self = shift;
	my $cur  = hour_of($self->{now});
	$self->_fold;
	for my $pid (keys %{ $self->{res} })
	{
		$self->_book($pid, $_, $cur) for grep { defined $_->{live_from} } values %{ $self->{live}{$pid} };
	}
	my $completed = 0;
	for my $pid (sort { $a <=> $b } keys %{ $self->{acc} })
	{
		my @due = grep { $_->{h} < $cur } values %{ $self->{acc}{$pid} };
		next unless @due;
		$_->{tid} //= $self->_new_tid('usage', $pid, $_->{rid}, $_->{h}) for @due;
		$self->{usage_tids}{ $_->{tid} } = $_ for @due;
		my $acct   = $self->{acct}{$pid};
		my $before = $acct->{balance};
		my $bal    = $before;
		for my $r (sort { $a->{h} <=> $b->{h} || $a->{tid} <=> $b->{tid} } @due)
		{
			my $charge    = row_amount($r);
			my $collected = $self->_draw($pid, $r->{h}, $self->_kind_of($pid, $r->{rid}), $charge);
			$bal -= $collected;
			$self->{stats}{'hours rounded half to even'}++ if $r->{units} % $HOUR * 2 == $HOUR;
			$self->{stats}{'hours partly uncollected'}++ if $collected < $charge && $collected > 0;
			$self->{stats}{'hours deducted'}++;
			$r->{charge}      = $charge;
			$r->{uncollected} = $charge - $collected;
			$self->{charged}{$pid}{ $r->{h} } += $charge;
			$r->{status}      = 'completed';
			$r->{completed}   = $self->{now};
			delete $self->{acc}{$pid}{"$r->{rid}\0$r->{h}"};
			$self->{touched}{ $r->{tid} } = 1;
			$completed++;
		}
		$acct->{balance} = $bal;
		$self->_cut_off($pid) if $before > 0 && $bal == 0 && !$acct->{depleted};
	}
	$self->_expire_lots;
	$self->_auto_recharges;
	$self->_act_on_spending(sort { $a <=> $b } keys %{ $self->{controls} });
	return { value => $completed };
}

sub op_run_balance_checks
{
	my $self = shift;
	$self->_fold;
	# (an expiry that takes the balance to zero cuts the project off by the zero-balance rule, as
	# a deduction does: not among the projects the checks acted on)
	$self->_expire_lots;
	# (the auto-recharges are judged by the available balances as the check found them, before
	# its cut-offs: a cut-off books the resources' time, and an hour stored comes first in the
	# draw-down of accrued usage, which may change what the lots have left)
	my %avail = map { $_ => $self->available($_) } grep { $self->{auto}{$_}{enabled} } keys %{ $self->{auto} };
	my %acted;
	for my $pid (sort { $a <=> $b } keys %{ $self->{acct} })
	{
		my $acct = $self->{acct}{$pid};
		if ($self->special($pid))
		{
			$acted{$pid} = 'judged kind by kind' if $self->_judge_kinds($pid);
			next;
		}
		next if $acct->{depleted};
		my ($acc, $rows) = $self->accumulating($pid);
		next unless $rows && $acct->{balance} <= $acc;
		$self->_cut_off($pid);
		$acted{$pid} = 'used up';
	}
	my @recharged = $self->_auto_recharges(\%avail);
	my @controlled = $self->_act_on_spending(sort { $a <=> $b } keys %{ $self->{controls} });
	my $actions = keys(%acted) + @recharged;
	$acted{$_} = join(', ', grep { defined } $acted{$_}, 'recharged') for @recharged;
	$acted{$_} = join(', ', grep { defined } $acted{$_}, 'spending controls') for @controlled;
	# README: run_balance_checks() returns the projects acted on
	return { value => scalar(keys %acted), actions => $actions,
		detail => 'the model acted on ' . join('; ', map { "$_: $acted{$_}" } sort { $a <=> $b } keys %acted) };
}

sub op_configure_auto_recharge
{
	my ($self, $op) = @_;
	my ($pid, $en, $thr, $amount, $mid) = @{$op}{qw(pid enabled threshold amount mid)};
	my $e = $self->_account_err($pid);
	return $e if $e;
	return _err('22004', 'enabled is null')   unless defined $en;
	return _err('22004', 'threshold is null') unless defined $thr;
	return _err('22023', 'negative threshold') if $thr < 0;
	$e = _positive_err('amount', $amount);
	return $e if $e;
	return _err('22023', 'amount below the minimum deposit') if $amount < $self->{min_deposit};
	if (defined $mid)
	{
		$self->_active_method($pid, $mid) or return _err('P0002', "no active method $mid");
	}
	elsif ($en && !defined $self->default_method($pid))
	{
		return _err('55000', 'no default payment method');
	}
	$self->{auto}{$pid} = { enabled => $en ? 1 : 0, threshold => $thr, amount => $amount, method => $mid, armed => 1 };
	return { value => undef };
}

sub op_claim_events
{
	my ($self, $op) = @_;
	my $n = $op->{n};
	return _err('22004', 'max_events is null') unless defined $n;
	return _err('22023', "max_events $n") if $n < 1 || $n > 10000;
	my @got;
	for my $e (sort { $a->{id} <=> $b->{id} } @{ $self->{events} })
	{
		last if @got >= $n;
		next if $e->{acked};
		next if defined $e->{claimed_until} && $e->{claimed_until} > $self->{now};
		$e->{claimed_until} = $self->{now} + $LEASE;
		$e->{claims}++;
		push @got, $e->{id};
	}
	return { value => \@got };
}

sub op_ack_event
{
	my ($self, $op) = @_;
	my $id = $op->{id};
	return _err('22004', 'event_id is null') unless defined $id;
	my $e = $self->{events_by_id}{$id} or return _err('P0002', "unknown event $id");
	return _err('55000', "event $id was never claimed") unless $e->{claims};
	$e->{acked} = 1;
	return { value => undef };
}

# After an operation: the events it queued get the ids the database gave them.  $db_events are
# the database's new events as [id, key]; returns an error text when the contents differ.
sub adopt_events
{
	my ($self, $db_events) = @_;
	my @mine = sort { event_key($a) cmp event_key($b) } @{ $self->{new_events} };
	my @theirs = sort { $a->[1] cmp $b->[1] } @$db_events;
	my $mk = join("\n", map { event_key($_) } @mine);
	my $tk = join("\n", map { $_->[1] } @theirs);
	if ($mk ne $tk)
	{
		return "queued events differ\n  model:\n    " . join("\n    ", map { event_key($_) } @mine)
		  . "\n  database:\n    " . join("\n    ", map { $_->[1] } @theirs);
	}
	for my $i (0 .. $#mine)
	{
		$mine[$i]{id} = $theirs[$i][0];
		push @{ $self->{events} }, $mine[$i];
		$self->{events_by_id}{ $theirs[$i][0] } = $mine[$i];
	}
	$self->{new_events} = [];
	return undef;
}

# ----------------------------------------------------------------------------------------------
# what the harness compares

sub projects { my $s = shift; return sort { $a <=> $b } keys %{ $s->{acct} }; }

# One line per resource, as the harness formats credits.resources; with $since, only those
# running, available or inaccessible, and those whose state changed at $since or later.
sub resource_lines
{
	my ($self, $since) = @_;
	my @l;
	my $line = sub { my ($pid, $r) = @_; join('|', $pid, $r->{rid}, $r->{kind}, $r->{state}, $r->{rate}, $r->{since}) };
	if (defined $since)
	{
		my %seen;
		for my $pid (keys %{ $self->{live} })
		{
			for my $r (values %{ $self->{live}{$pid} })
			{
				$seen{"$pid\0$r->{rid}"} = 1;
				push @l, $line->($pid, $r);
			}
		}
		for (my $i = $#{ $self->{changes} }; $i >= 0 && $self->{changes}[$i][1]{since} >= $since; $i--)
		{
			my ($pid, $r) = @{ $self->{changes}[$i] };
			push @l, $line->($pid, $r) unless $seen{"$pid\0$r->{rid}"}++;
		}
		return sort @l;
	}
	for my $pid (keys %{ $self->{res} })
	{
		push @l, $line->($pid, $_) for values %{ $self->{res}{$pid} };
	}
	return sort @l;
}

sub method_lines
{
	my $self = shift;
	return sort map { join('|', $_->{mid}, $_->{pid}, $_->{ref}, $_->{default} ? 't' : 'f', $_->{removed} ? 't' : 'f') }
	  values %{ $self->{methods} };
}

sub auto_lines
{
	my $self = shift;
	return sort map {
		my $c = $self->{auto}{$_};
		join('|', $_, $c->{enabled} ? 't' : 'f', $c->{threshold}, $c->{amount}, $c->{method} // '', $c->{armed} ? 't' : 'f')
	} keys %{ $self->{auto} };
}

# Every stored transaction the model is sure of (deposits, auto-recharges, completed usage):
# tid|pid|type|status|amount|uncollected|resource|hour|method
sub final_transaction_lines
{
	my $self = shift;
	my @l;
	push @l, deposit_line($_) for values %{ $self->{txns} };
	for my $r (values %{ $self->{usage_tids} })
	{
		next unless $r->{status} eq 'completed';
		push @l, usage_line($r);
	}
	return sort @l;
}

sub usage_line
{
	my $r = shift;
	return join('|', $r->{tid}, $r->{pid}, 'usage', 'completed', $r->{uncollected} - $r->{charge}, $r->{uncollected},
		$r->{rid}, $r->{h}, '');
}

# A deposit, auto-recharge, grant, expiry or refund: tid|pid|type|status|amount|0|lot|''|method
# (the harness reads an expiry's or a refund's lot where a usage row has its resource).
sub deposit_line
{
	my $t = shift;
	return join('|', $t->{tid}, $t->{pid}, $t->{type}, $t->{status}, $t->{amount}, 0, $t->{lot} // '', '',
		$t->{method} // '');
}

# transaction_history without transaction ids of accumulating rows:
# pid|tid|date|type|amount|status|uncollected|invoice
# A project's statement of [from, to) as credits.statement gives it, in lines
# pid|from|line|resource|amount (micro-credits): the completed transactions by their history
# date; the opening and closing balances are the balance less what is dated from from (to) on.
sub statement_lines
{
	my ($self, $pid, $from, $to) = @_;
	my @rows;    # [date, line, resource, amount, uncollected]
	my %line_of = (deposit => 'deposits', auto_recharge => 'deposits', grant => 'grants', expiry => 'expired',
		refund => 'refunded');
	for my $t (values %{ $self->{txns} })
	{
		push @rows, [ $t->{created}, $line_of{ $t->{type} }, '', $t->{amount}, 0 ]
		  if $t->{pid} == $pid && $t->{status} eq 'completed';
	}
	for my $r (values %{ $self->{usage_tids} })
	{
		push @rows, [ $r->{h}, 'usage', $r->{rid}, $r->{uncollected} - $r->{charge}, $r->{uncollected} ]
		  if $r->{pid} == $pid && $r->{status} eq 'completed';
	}
	my $balance = $self->{acct}{$pid}{balance};
	my (%sum, %usage, $uncollected);
	my ($after_from, $after_to) = (0, 0);
	$uncollected = 0;
	$sum{$_} = 0 for qw(deposits grants expired refunded);
	for my $x (@rows)
	{
		my ($date, $line, $rid, $amount, $unc) = @$x;
		$after_from += $amount if $date >= $from;
		$after_to   += $amount if $date >= $to;
		next unless $date >= $from && $date < $to;
		$uncollected += $unc;
		if ($line eq 'usage') { $usage{$rid} += $amount; }
		else                  { $sum{$line} += $amount; }
	}
	my @l = ([ 'opening_balance', '', $balance - $after_from ], (map { [ $_, '', $sum{$_} ] } keys %sum),
		(map { [ 'usage', $_, $usage{$_} ] } keys %usage), [ 'closing_balance', '', $balance - $after_to ],
		[ 'uncollected', '', $uncollected ]);
	return map { join('|', $pid, $from, @$_) } @l;
}

sub history_lines
{
	my $self = shift;
	my @l;
	for my $t (values %{ $self->{txns} })
	{
		push @l, join('|', $t->{pid}, $t->{tid}, $t->{created}, $t->{type}, $t->{amount}, $t->{status}, 0,
			$t->{invoice} // '');
	}
	for my $r (values %{ $self->{usage_tids} })
	{
		next unless $r->{status} eq 'completed';
		push @l, join('|', $r->{pid}, $r->{tid}, $r->{h}, 'usage', $r->{uncollected} - $r->{charge}, 'completed',
			$r->{uncollected}, '');
	}
	for my $pid (keys %{ $self->{acct} })
	{
		push @l, map { join('|', $pid, '-', $_->{h}, 'usage', -$_->{taken}, 'accumulating', $_->{amount} - $_->{taken}, '') }
		  $self->would_take($pid);
	}
	return sort @l;
}

# The hours not yet deducted, each with what it would take if it were deducted now ({taken}):
# in the deduction's order (by hour; within an hour the hours stored already, by transaction id,
# then the others by resource id), each drawn from the lots that may pay for it.
sub would_take
{
	my ($self, $pid) = @_;
	my @lots = $self->_lots_in_order($pid);
	my %left = map { $_->{tid} => $_->{remaining} - $_->{held} } @lots;
	my @hours = $self->_accrued_in_order($pid);
	for my $x (@hours)
	{
		($x->{taken}) = $x->{amount} > 0
		  ? _draw_from(\@lots, \%left, $x->{h}, $self->_kind_of($pid, $x->{rid}), $x->{amount})
		  : (0);
	}
	return @hours;
}

# What the history's preview of the accumulating hours leaves of the balance (README: with lots
# all alike that is the available balance).
sub preview_left
{
	my ($self, $pid) = @_;
	my $left = $self->{acct}{$pid}{balance};
	$left -= $_->{taken} for $self->would_take($pid);
	my $avail = $self->available($pid);
	die "model: the preview leaves $left of project $pid, available is $avail" if !$self->special($pid) && $left != $avail;
	return $left;
}

# The hours not yet deducted in the deduction's order: by hour; within an hour the hours stored
# already, by transaction id, then the others by resource id.
sub _accrued_in_order
{
	my ($self, $pid) = @_;
	my @hours = values %{ $self->in_progress($pid) };
	my $inf = 9**99;
	for my $x (@hours)
	{
		# (the id of a row stored before now: the database's ids of the rows the current
		# operation stores are known already)
		my $row = $self->{acc}{$pid}{"$x->{rid}\0$x->{h}"};
		$x->{tid} = $row && $row->{stored} ? $self->{lookup}->('usage', $pid, $x->{rid}, $x->{h}) // $inf : $inf;
	}
	return sort { $a->{h} <=> $b->{h} || $a->{tid} <=> $b->{tid} || $a->{rid} cmp $b->{rid} } @hours;
}

sub event_lines
{
	my $self = shift;
	return sort map {
		join('|', $_->{id}, event_key($_), $_->{claims}, $_->{acked} ? 't' : 'f')
	} @{ $self->{events} };
}

# ==============================================================================================
package CreditsModel::Gen;

use strict;
use warnings;

# Random operations for a model.  Only Perl's rand() is used, seeded by the caller (srand).
sub new
{
	my ($class, %o) = @_;
	my $n = $o{projects} // 5 + int(rand(4));
	my @pids = map { 100 * $_ + int(rand(100)) } 1 .. $n;
	return bless {
		model    => $o{model},
		pids     => \@pids,
		unknown  => 9_999_999,
		serial   => 0,
		long     => 'x' x 201,
	}, $class;
}

sub _pick { my $l = shift; return @$l ? $l->[ int(rand(@$l)) ] : undef; }
sub _chance { return rand() < $_[0]; }

sub _weighted
{
	my @w = @_;
	my $total = 0;
	$total += $w[ 2 * $_ + 1 ] for 0 .. $#w / 2;
	my $x = rand($total);
	for my $i (0 .. $#w / 2)
	{
		return $w[ 2 * $i ] if ($x -= $w[ 2 * $i + 1 ]) < 0;
	}
	return $w[0];
}

sub _open_pids { my $s = shift; return [ grep { $s->{model}{acct}{$_} } @{ $s->{pids} } ]; }

# A project: usually an open one, sometimes one never opened (every call must refuse it).
sub _pid
{
	my ($s, $p_unknown) = @_;
	return $s->{unknown} if _chance($p_unknown // 0.02);
	return _pick($s->_open_pids) // $s->{unknown};
}

# A project that can start things (usually): open, not cut off, with a positive balance.
sub _funded_pid
{
	my $s = shift;
	my $m = $s->{model};
	my @f = grep { !$m->{acct}{$_}{depleted} && $m->{acct}{$_}{balance} > 0 } @{ $s->_open_pids };
	return @f && _chance(0.85) ? _pick(\@f) : $s->_pid;
}

sub _key { my ($s, $prefix) = @_; return $prefix . '-' . ++$s->{serial}; }

# A rate per hour: a mix of realistic prices and odd ones, so that the half-to-even rule is
# exercised: an odd micro-credit rate for half an hour is exactly half a micro-credit, and an
# odd multiple of 225 micro-credits per hour comes to a half for every 16k+8 seconds.
sub _rate
{
	return _pick([ 2_400_000, 3_000_000, 70_000, 1_000_000, 500_000, 10_000_000, 1_800_001, 2_250_225 ])
	  if _chance(0.5);
	return _pick([ 1, 3, 5, 7, 15, 45, 225, 675, 1125, 3375 ]) if _chance(0.4);
	return 1 + int(rand(5_000_000));
}

sub _usage_amount
{
	return 1 + int(rand(50)) if _chance(0.3);
	return 1 + int(rand(200_000)) if _chance(0.7);
	return 1 + int(rand(2_000_000));
}

sub _deposit_amount
{
	my $s = shift;
	my $min = $s->{model}{min_deposit};
	return $min if _chance(0.1);
	my $amt = $min + int(rand(40)) * 1_000_000;
	$amt += int(rand(1_000_000)) if _chance(0.3);
	return $amt;
}

sub _resources
{
	my ($s, $pid, $kind, @states) = @_;
	my %ok = map { $_ => 1 } @states;
	my $all  = !@states || grep { $_ eq 'terminated' || $_ eq 'deleted' } @states;
	my $live = !$all && !grep { $_ eq 'stopped' } @states;
	my $r = ($all ? $s->{model}{res}{$pid} : $live ? $s->{model}{live}{$pid} : $s->{model}{active}{$pid}) // {};
	return [ sort grep { $r->{$_}{kind} eq $kind && (!@states || $ok{ $r->{$_}{state} }) } keys %$r ];
}

sub _methods
{
	my ($s, $pid, $removed) = @_;
	return [ sort { $a <=> $b } map { $_->{mid} }
		  grep { $_->{pid} == $pid && !$_->{removed} == !$removed } values %{ $s->{model}{methods} } ];
}

sub _other_method
{
	my ($s, $pid) = @_;
	my @m = map { $_->{mid} } grep { $_->{pid} != $pid || $_->{removed} } values %{ $s->{model}{methods} };
	return _chance(0.7) && @m ? _pick([ sort { $a <=> $b } @m ]) : 88_888_888;
}

sub next_op
{
	my $s = shift;
	my $m = $s->{model};
	my @closed = grep { !$m->{acct}{$_} } @{ $s->{pids} };
	return { op => 'open_account', pid => $closed[0] } if @closed && _chance(0.5);
	my $kind = _weighted(
		open_account => 1, add_payment_method => 3, set_default_payment_method => 1,
		remove_payment_method => 1, add_credits => 9, complete_deposit => 8, fail_deposit => 2,
		start_instance => 9, stop_instance => 4, attach_volume => 4, delete_volume => 2,
		record_usage => 8, late_usage => 3, record_usage_batch => 3, advance_clock => 13,
		run_hourly_deductions => 6, run_balance_checks => 8, configure_auto_recharge => 2,
		configure_limits => 1.5, configure_alerts => 1.5, grant_credits => 3, refund_deposit => 1.5,
		complete_refund => 1, fail_refund => 0.5,
		claim_events => 2, ack_event => 2, set_minimum_deposit => 0.5);
	my $g = "gen_$kind";
	return $s->$g;
}

sub gen_open_account
{
	my $s = shift;
	return { op => 'open_account', pid => _chance(0.05) ? undef : _pick($s->{pids}) };
}

sub gen_add_payment_method
{
	my ($s, $pid) = @_;
	$pid //= $s->_pid;
	my $op  = {
		op => 'add_payment_method', pid => $pid, ref => "pm_${pid}_" . int(rand(5)),
		label => _chance(0.5) ? 'Visa ' . int(rand(10000)) : undef, make_default => _chance(0.7) ? 1 : 0,
	};
	if (_chance(0.1))
	{
		my $bad = int(rand(4));
		$op->{ref} = '' if $bad == 0;
		$op->{ref} = $s->{long} if $bad == 1;
		$op->{label} = $s->{long} if $bad == 2;
		$op->{make_default} = undef if $bad == 3;
	}
	return $op;
}

sub gen_set_default_payment_method
{
	my $s   = shift;
	my $pid = $s->_pid;
	my $mid = _chance(0.8) ? _pick($s->_methods($pid)) : undef;
	$mid //= _chance(0.1) ? undef : $s->_other_method($pid);
	return { op => 'set_default_payment_method', pid => $pid, mid => $mid };
}

sub gen_remove_payment_method
{
	my $s   = shift;
	my $pid = $s->_pid;
	my $mid = _chance(0.85) ? _pick($s->_methods($pid)) : undef;
	$mid //= $s->_other_method($pid);
	return { op => 'remove_payment_method', pid => $pid, mid => $mid };
}

# A grant: sometimes expiring (often within the hour, or exactly at an hour), sometimes only
# for some kinds; now and then a retry with its key or a bad argument.
sub gen_grant_credits
{
	my $s   = shift;
	my $m   = $s->{model};
	my $pid = $s->_pid;
	my $now = $m->{now};
	my $op  = { op => 'grant_credits', pid => $pid, amount => 100_000 * (1 + int(rand(300))),
		priority => _chance(0.3) ? 50 : int(rand(101)), description => _chance(0.5) ? 'Promotion ' . int(rand(100)) : undef };
	if (_chance(0.45))
	{
		my $v = rand();
		my $h = CreditsModel::hour_of($now);
		$op->{expires} = $v < 0.3 ? $now + 1 + int(rand($h + $CreditsModel::HOUR - $now))    # within this hour
		  : $v < 0.5 ? $h + (1 + int(rand(4))) * $CreditsModel::HOUR                        # at an hour
		  : $v < 0.55 ? $h + $CreditsModel::HOUR + 1                                         # just after one
		  : $now + (1 + int(rand(600))) * 60_000_000;                                        # up to 10 hours
	}
	if (_chance(0.45))
	{
		my @k = grep { _chance(0.45) } @CreditsModel::KINDS;
		@k = (_pick(\@CreditsModel::KINDS)) unless @k;
		push @k, $k[0] if _chance(0.1);    # a repeat
		@k = reverse @k if _chance(0.3);
		$op->{applies_to} = \@k;
	}
	my $keys = [ sort keys %{ $m->{grant_keys}{$pid} // {} } ];
	my $v = rand();
	if ($v < 0.15 && @$keys)
	{
		# a retry: the same key with the same arguments, or with other ones
		$op->{key} = _pick($keys);
		my $t = $m->{txns}{ $m->{grant_keys}{$pid}{ $op->{key} } };
		@{$op}{qw(amount priority expires)} = ($t->{amount}, $t->{prio}, $t->{expires});
		$op->{applies_to} = $t->{kinds} ? [ reverse @{ $t->{kinds} } ] : undef;
		my $w = rand();
		if    ($w < 0.15) { $op->{amount} += 1; }
		elsif ($w < 0.22) { $op->{expires} = defined $op->{expires} ? undef : $now + $CreditsModel::HOUR; }
		elsif ($w < 0.29) { $op->{applies_to} = $op->{applies_to} ? undef : ['api']; }
	}
	elsif ($v < 0.17)
	{
		# another kind of transaction's key
		$op->{key} = _pick([ sort keys %{ $m->{dep_keys}{$pid} // {} } ]) // $s->_key('grant');
	}
	elsif ($v < 0.5) { $op->{key} = $s->_key('grant'); }
	elsif ($v < 0.55) { $op->{amount} = _pick([ 0, -1_000_000, undef, $CreditsModel::MAX_AMOUNT + 1 ]); }
	elsif ($v < 0.59) { $op->{priority} = _pick([ -1, 101, undef ]); }
	elsif ($v < 0.61) { $op->{description} = _pick([ '', $s->{long} ]); }
	elsif ($v < 0.64) { $op->{expires} = _pick([ $now, $now - 1, $now - $CreditsModel::HOUR ]); }
	elsif ($v < 0.67) { $op->{applies_to} = _pick([ [], ['gpu'], [ 'api', 'instances' ], [undef] ]); }
	return $op;
}

# A refund request: mostly of a project's completed deposit, for part, all (null) or more than
# may be refunded; now and then of a grant, a pending or failed deposit, another project's
# deposit, a usage row, or with a bad argument or a reused key.
sub gen_refund_deposit
{
	my $s   = shift;
	my $m   = $s->{model};
	my $pid = $s->_pid(0.01);
	my @paid = grep { $_->{kind} eq 'paid' } @{ $m->{lots}{$pid} // [] };
	my @live = grep { $_->{remaining} > 0 } @paid;
	my $lot  = _chance(0.85) ? _pick(\@live) // _pick(\@paid) : _pick(\@paid);
	my $op   = { op => 'refund_deposit', pid => $pid, tid => $lot ? $lot->{tid} : 77_777_777,
		text => _chance(0.5) ? 'customer request' : undef };
	if ($lot && $m->{acct}{$pid})
	{
		my $may = $m->refundable($pid, $lot->{tid});
		my $v = rand();
		$op->{amount} = $v < 0.25 ? undef
		  : $v < 0.35 ? $may
		  : $v < 0.45 ? $may + 1
		  : $v < 0.5 ? $lot->{remaining} + 1_000_000
		  : 1 + int(rand($may > 1 ? $may / 2 : 1));
	}
	my $v = rand();
	my $keys = [ sort keys %{ $m->{refund_keys}{$pid} // {} } ];
	if ($v < 0.12 && @$keys)
	{
		$op->{key} = _pick($keys);
		my $t = $m->{txns}{ $m->{refund_keys}{$pid}{ $op->{key} } };
		@{$op}{qw(tid amount)} = ($t->{lot}, _chance(0.3) ? undef : -$t->{amount});
		$op->{amount} += 1 if defined $op->{amount} && _chance(0.25);
	}
	elsif ($v < 0.45) { $op->{key} = $s->_key('ref'); }
	elsif ($v < 0.5)  { $op->{tid} = _pick([ map { $_->{tid} } grep { $_->{kind} eq 'promotional' } @{ $m->{lots}{$pid} // [] } ]) // $op->{tid}; }
	elsif ($v < 0.55) { $op->{tid} = $s->_some_tid($pid, _pick([ 'pending', 'failed' ])) // $op->{tid}; }
	elsif ($v < 0.58)
	{
		my @o = grep { $m->{txns}{$_}{pid} != $pid } keys %{ $m->{txns} };
		$op->{tid} = _pick([ sort { $a <=> $b } @o ]) // $op->{tid};
	}
	elsif ($v < 0.6)
	{
		my @u = grep { $m->{usage_tids}{$_}{pid} == $pid } keys %{ $m->{usage_tids} };
		$op->{tid} = _pick([ sort { $a <=> $b } @u ]) // $op->{tid};
	}
	elsif ($v < 0.62) { $op->{amount} = _pick([ 0, -1_000_000, $CreditsModel::MAX_AMOUNT + 1 ]); }
	elsif ($v < 0.63) { $op->{tid} = undef; }
	elsif ($v < 0.65) { $op->{text} = _pick([ '', $s->{long} ]); }
	elsif ($v < 0.66) { $op->{key} = _pick([ sort keys %{ $m->{dep_keys}{$pid} // {} } ]); }
	return $op;
}

sub _settle_refund
{
	my ($s, $op_name) = @_;
	my $m = $s->{model};
	my @pending = sort { $a <=> $b } grep { $m->{txns}{$_}{type} eq 'refund' } keys %{ $m->{pending} };
	my @settled = sort { $a <=> $b } grep { $m->{txns}{$_}{type} eq 'refund' && $m->{txns}{$_}{status} ne 'pending' }
	  keys %{ $m->{txns} };
	my $v = rand();
	my ($pid, $tid);
	if    ($v < 0.8 && @pending) { $tid = _chance(0.5) ? $pending[-1] : _pick(\@pending); }
	elsif ($v < 0.88 && @settled) { $tid = _pick(\@settled); }
	elsif ($v < 0.93) { $tid = _pick([ sort { $a <=> $b } keys %{ $m->{pending} } ]); }
	$pid = defined $tid ? $m->{txns}{$tid}{pid} : $s->_pid;
	if (_chance(0.04)) { $pid = $s->_pid; }    # (another project's refund, mostly)
	$tid //= _chance(0.9) ? 77_777_777 : undef;
	my $text = $op_name eq 'fail_refund' && _chance(0.6) ? 'provider_declined' : undef;
	$text = '' if $op_name eq 'fail_refund' && _chance(0.02);
	return { op => $op_name, pid => $pid, tid => $tid, text => $text };
}

sub gen_complete_refund { return $_[0]->_settle_refund('complete_refund'); }
sub gen_fail_refund     { return $_[0]->_settle_refund('fail_refund'); }

sub gen_add_credits
{
	my $s   = shift;
	my $m   = $s->{model};
	my $pid = $s->_pid;
	return $s->gen_add_payment_method($pid)
	  if $m->{acct}{$pid} && !defined $m->default_method($pid) && _chance(0.6);
	my $op  = { op => 'add_credits', pid => $pid, amount => $s->_deposit_amount };
	$op->{mid} = _pick($s->_methods($pid)) if _chance(0.25);
	my $keys = [ sort keys %{ $m->{dep_keys}{$pid} // {} } ];
	my $v = rand();
	if ($v < 0.2 && @$keys)
	{
		# a retry: the same key with the same arguments, or with other ones
		$op->{key} = _pick($keys);
		my $t = $m->{txns}{ $m->{dep_keys}{$pid}{ $op->{key} } };
		$op->{amount} = $t->{amount};
		$op->{mid} = _chance(0.5) ? undef : $t->{method};
		if (_chance(0.4))
		{
			my @other = grep { $_ != $t->{method} } @{ $s->_methods($pid) };
			if (@other && _chance(0.5)) { $op->{mid} = _pick(\@other); }
			else                        { $op->{amount} += _chance(0.5) ? 1 : 1_000_000; }
		}
	}
	elsif ($v < 0.25)
	{
		$op->{amount} = _pick([ $m->{min_deposit} - 1, 10_000, 4_990_000 ]);
		$op->{key} = $s->_key('dep') if _chance(0.3);
	}
	elsif ($v < 0.27) { $op->{amount} = _pick([ 0, -5_000_000, undef, $CreditsModel::MAX_AMOUNT + 1 ]); }
	elsif ($v < 0.29) { $op->{key} = _pick([ '', $s->{long} ]); }
	elsif ($v < 0.31) { $op->{mid} = $s->_other_method($pid); }
	else
	{
		$op->{key} = $s->_key('dep') if _chance(0.5);
		my $a = $m->{acct}{$pid};
		if ($a && $a->{depleted} && _chance(0.4))
		{
			# a deposit that brings the balance exactly to the accrued usage: not enough to lift
			# the cut-off (or one micro-credit more: enough)
			my $need = $m->accumulating($pid) - $a->{balance} + (_chance(0.3) ? 1 : 0);
			$op->{amount} = $need if $need >= $m->{min_deposit};
		}
	}
	return $op;
}

sub _some_tid
{
	my ($s, $pid, $want) = @_;
	my $m = $s->{model};
	my @t = sort { $a <=> $b } map { $_->{tid} } grep { $_->{pid} == $pid && $_->{status} eq $want } values %{ $m->{txns} };
	return _pick(\@t);
}

sub _settle
{
	my ($s, $op_name) = @_;
	my $m   = $s->{model};
	my $pid = $s->_pid(0.01);
	my $tid;
	my $v = rand();
	my @pending = sort { $a <=> $b } grep { $m->{txns}{$_}{type} ne 'refund' } keys %{ $m->{pending} };
	if ($v < 0.82 && @pending)
	{
		$tid = _chance(0.4) ? $pending[-1] : _pick(\@pending);    # often the newest
		$pid = $m->{txns}{$tid}{pid};
	}
	elsif ($v < 0.82) { $tid = $s->_some_tid($pid, 'pending'); }
	elsif ($v < 0.88) { $tid = $s->_some_tid($pid, _pick([ 'completed', 'failed' ])); }
	elsif ($v < 0.93)
	{
		my @u = grep { $m->{usage_tids}{$_}{pid} == $pid } keys %{ $m->{usage_tids} };
		$tid = _pick([ sort { $a <=> $b } @u ]);
	}
	elsif ($v < 0.97)
	{
		my @o = grep { $m->{txns}{$_}{pid} != $pid } keys %{ $m->{txns} };
		$tid = _pick([ sort { $a <=> $b } @o ]);
	}
	$tid //= _chance(0.9) ? 77_777_777 : undef;
	my $text = _chance(0.5) ? undef : $op_name eq 'complete_deposit' ? "https://invoices.example/in_" . ($tid // 0) : 'card_declined';
	$text = '' if _chance(0.02);
	return { op => $op_name, pid => $pid, tid => $tid, text => $text };
}

sub gen_complete_deposit { return $_[0]->_settle('complete_deposit'); }
sub gen_fail_deposit     { return $_[0]->_settle('fail_deposit'); }

sub _activate
{
	my ($s, $op_name, $kind) = @_;
	my $pid  = $s->_funded_pid;
	my $pfx  = $kind eq 'instance' ? 'gpu' : 'vol';
	my $op   = { op => $op_name, pid => $pid, rate => $s->_rate };
	my $v    = rand();
	my $live = $kind eq 'instance' ? 'running' : 'available';
	if ($v < 0.45) { $op->{rid} = $s->_key($pfx); }
	elsif ($v < 0.65 && $kind eq 'instance') { $op->{rid} = _pick($s->_resources($pid, $kind, 'stopped')); }
	elsif ($v < 0.8)
	{
		$op->{rid} = _pick($s->_resources($pid, $kind, $live));
		$op->{rate} = $s->{model}{res}{$pid}{ $op->{rid} }{rate} if $op->{rid} && _chance(0.3);
	}
	elsif ($v < 0.86) { $op->{rid} = _pick($s->_resources($pid, $kind, 'terminated', 'deleted', 'inaccessible')); }
	elsif ($v < 0.9)  { $op->{rid} = _pick($s->_resources($pid, $kind eq 'instance' ? 'volume' : 'instance')); }
	elsif ($v < 0.95) { $op->{rate} = _pick([ 0, -1_000_000, undef, $CreditsModel::MAX_AMOUNT + 1 ]); }
	else              { $op->{rid} = _pick([ '', $s->{long}, undef ]); return $op; }
	$op->{rid} //= $s->_key($pfx);
	return $op;
}

sub gen_start_instance { return $_[0]->_activate('start_instance', 'instance'); }
sub gen_attach_volume  { return $_[0]->_activate('attach_volume', 'volume'); }

sub _deactivate
{
	my ($s, $op_name, $kind) = @_;
	my @live = grep { @{ $s->_resources($_, $kind, 'running', 'available', 'inaccessible') } } @{ $s->_open_pids };
	my $pid = @live && _chance(0.85) ? _pick(\@live) : $s->_pid;
	my $v   = rand();
	my $rid;
	if ($v < 0.75) { $rid = _pick($s->_resources($pid, $kind, $kind eq 'instance' ? 'running' : ('available', 'inaccessible'))); }
	elsif ($v < 0.87) { $rid = _pick($s->_resources($pid, $kind)); }
	elsif ($v < 0.93) { $rid = _pick($s->_resources($pid, $kind eq 'instance' ? 'volume' : 'instance')); }
	elsif ($v < 0.96) { $rid = 'api:chat'; }
	else              { return { op => $op_name, pid => $pid, rid => _pick([ '', $s->{long} ]) }; }
	return { op => $op_name, pid => $pid, rid => $rid // 'nonexistent' };
}

sub gen_stop_instance { return $_[0]->_deactivate('stop_instance', 'instance'); }
sub gen_delete_volume { return $_[0]->_deactivate('delete_volume', 'volume'); }

sub _api_rid
{
	my ($s, $pid) = @_;
	if (_chance(0.08))
	{
		my $r = _pick($s->_resources($pid, _pick([ 'instance', 'volume' ])));
		return $r if $r;
	}
	return _pick([ 'api:chat', 'api:embed', 'api:image' ]);
}

sub gen_record_usage
{
	my $s   = shift;
	my $m   = $s->{model};
	my $pid = $s->_pid;
	my $op  = { op => 'record_usage', pid => $pid, rid => $s->_api_rid($pid), amount => _usage_amount() };
	if ($m->{acct}{$pid} && _chance(0.06))
	{
		# exactly what is left: the balance check must cut the project off (balance = accrued)
		my $left = $m->available($pid);
		$op->{amount} = $left if $left > 0;
	}
	my $v   = rand();
	my $keys = [ sort keys %{ $m->{usage_keys}{$pid} // {} } ];
	if ($v < 0.45) { $op->{key} = $s->_key('req'); }
	elsif ($v < 0.65 && @$keys)
	{
		$op->{key} = _pick($keys);
		@{$op}{qw(rid amount)} = @{ $m->{usage_keys}{$pid}{ $op->{key} } };
		if (_chance(0.35))
		{
			if (_chance(0.5)) { $op->{amount} += 1; }
			else              { $op->{rid} = $op->{rid} eq 'api:chat' ? 'api:embed' : 'api:chat'; }
		}
	}
	elsif ($v < 0.68) { $op->{amount} = _pick([ 0, -1, undef, $CreditsModel::MAX_AMOUNT + 1 ]); }
	elsif ($v < 0.71) { $op->{rid} = _pick([ '', $s->{long}, undef ]); }
	elsif ($v < 0.73) { $op->{key} = _pick([ '', $s->{long} ]); }
	return $op;
}

# A call whose transaction began earlier (up to 2.5 hours ago) and commits now.
sub gen_late_usage
{
	my $s  = shift;
	my $op = $s->gen_record_usage;
	my $now = $s->{model}{now};
	my $v   = rand();
	if ($v < 0.6 && !defined $op->{key} && $s->{model}{acct}{ $op->{pid} })
	{
		# usually a product that was used in that hour, so that the hour may be deducted already
		my $rows = $s->{model}{rows}{ $op->{pid} } // {};
		my $prev = CreditsModel::hour_of($now) - $CreditsModel::HOUR;
		my @used = sort grep { $rows->{$_}{$prev} } keys %$rows;
		$op->{rid} = _pick(\@used) if @used && _chance(0.8);
	}
	# mostly the last minutes of the previous hour: the hour that a deduction may just have closed
	$op->{at} = $v < 0.6 ? CreditsModel::hour_of($now) - 1 - int(rand(600_000_000))
	  : $v < 0.8 ? $now - 1 - int(rand(3_600)) * 1_000_000
	  :            $now - 1 - int(rand(9_000_000_000));
	return $op;
}

sub gen_record_usage_batch
{
	my $s = shift;
	my $m = $s->{model};
	my $n = 1 + int(rand(6));
	my (@p, @r, @a, @k);
	my $keyed = _chance(0.7);
	for (1 .. $n)
	{
		my $pid = $s->_pid(0.01);
		my ($rid, $amount, $key) = ($s->_api_rid($pid), _usage_amount(), undef);
		if ($keyed && _chance(0.8))
		{
			my $keys = [ sort keys %{ $m->{usage_keys}{$pid} // {} } ];
			if (@$keys && _chance(0.3))
			{
				$key = _pick($keys);
				($rid, $amount) = @{ $m->{usage_keys}{$pid}{$key} };
				$amount++ if _chance(0.2);
			}
			elsif (@k && $p[-1] == $pid && defined $k[-1] && _chance(0.3))
			{
				($rid, $amount, $key) = ($r[-1], $a[-1], $k[-1]);    # repeated within the batch
				$amount++ if _chance(0.2);
			}
			else { $key = $s->_key('bat'); }
		}
		push @p, $pid;
		push @r, $rid;
		push @a, $amount;
		push @k, $key;
	}
	my $op = { op => 'record_usage_batch', pids => \@p, rids => \@r, amounts => \@a, keys => $keyed ? \@k : undef };
	my $v = rand();
	if    ($v < 0.03) { push @{ $op->{amounts} }, 1; }
	elsif ($v < 0.06) { $op->{amounts}[ int(rand($n)) ] = _pick([ 0, -1, undef, $CreditsModel::MAX_AMOUNT + 1 ]); }
	elsif ($v < 0.08) { $op->{rids}[ int(rand($n)) ] = _pick([ '', undef ]); }
	elsif ($v < 0.09) { $op->{pids}[ int(rand($n)) ] = undef; }
	return $op;
}

sub gen_advance_clock
{
	my $s   = shift;
	my $now = $s->{model}{now};
	my $v   = rand();
	my $d;
	if    ($v < 0.25)  { $d = (1 + int(rand(59))) * 1_000_000; }
	elsif ($v < 0.65)  { $d = (1 + int(rand(59))) * 60_000_000; }
	elsif ($v < 0.75)  { $d = _pick([ 15, 30, 45 ]) * 60_000_000; }
	elsif ($v < 0.81)  { $d = (1 + int(rand(5))) * 3_600_000_000 + int(rand(3600)) * 1_000_000; }
	elsif ($v < 0.93)  { $d = CreditsModel::hour_of($now) + $CreditsModel::HOUR - $now; }    # to the hour
	elsif ($v < 0.985) { $d = 1 + int(rand(90_000_000)); }                                   # microseconds
	else               { $d = (6 + int(rand(25))) * 3_600_000_000 + int(rand(3600)) * 1_000_000; }    # an outage
	return { op => 'set_clock', to => $now + $d };
}

# The superuser's minimum deposit: mostly the default, sometimes lower or higher (a retry of
# an earlier deposit must still get its id).
sub gen_set_minimum_deposit
{
	return { op => 'set_minimum_deposit', amount => _pick([ 5_000_000, 5_000_000, 1_000_000, 12_000_000, 10_000 ]) };
}

sub gen_run_hourly_deductions { return { op => 'run_hourly_deductions' }; }
sub gen_run_balance_checks    { return { op => 'run_balance_checks' }; }

sub gen_configure_auto_recharge
{
	my $s   = shift;
	my $pid = $s->_pid;
	my $op  = {
		op => 'configure_auto_recharge', pid => $pid, enabled => _chance(0.8) ? 1 : 0,
		threshold => int(rand(30)) * 1_000_000 + (_chance(0.3) ? int(rand(1_000_000)) : 0),
		amount => $s->_deposit_amount,
		mid => _chance(0.3) ? _pick($s->_methods($pid)) : undef,
	};
	# a threshold exactly at the available balance: not below it, so no recharge yet
	$op->{threshold} = $s->{model}->available($pid) if $s->{model}{acct}{$pid} && _chance(0.2);
	my $v = rand();
	if    ($v < 0.03) { $op->{threshold} = -1; }
	elsif ($v < 0.06) { $op->{amount} = _pick([ 0, $s->{model}{min_deposit} - 1 ]); }
	elsif ($v < 0.08) { $op->{mid} = $s->_other_method($pid); }
	elsif ($v < 0.09) { $op->{enabled} = undef; }
	return $op;
}

# Spending limits: each one off half the time; now and then a bad value or an unknown project.
sub gen_configure_limits
{
	my $s  = shift;
	my $op = {
		op => 'configure_limits', pid => $s->_pid,
		max_burn   => _chance(0.5) ? (1 + int(rand(12))) * 1_000_000 + (_chance(0.3) ? int(rand(1_000_000)) : 0) : undef,
		min_runway => _chance(0.5) ? (10 + int(rand(600))) * 60 : undef,
		daily      => _chance(0.5) ? (1 + int(rand(40))) * 1_000_000 : undef,
		monthly    => _chance(0.4) ? (5 + int(rand(200))) * 1_000_000 : undef,
		on_budget  => _chance(0.5) ? 'stop' : 'alert',
	};
	my $v = rand();
	if    ($v < 0.02) { $op->{max_burn} = _pick([ 0, -1_000_000 ]); }
	elsif ($v < 0.04) { $op->{min_runway} = _pick([ 0, -60 ]); }
	elsif ($v < 0.05) { $op->{daily} = 0; }
	elsif ($v < 0.06) { $op->{on_budget} = _pick([ 'pause', undef ]); }
	return $op;
}

# Alert lines: each off a third of the time; now and then a bad value.
sub gen_configure_alerts
{
	my $s  = shift;
	my $op = {
		op => 'configure_alerts', pid => $s->_pid,
		below_balance => _chance(0.67) ? (1 + int(rand(40))) * 1_000_000 : undef,
		below_runway  => _chance(0.67) ? (10 + int(rand(1200))) * 60 : undef,
	};
	my $v = rand();
	if    ($v < 0.03) { $op->{below_balance} = _pick([ 0, -1_000_000 ]); }
	elsif ($v < 0.05) { $op->{below_runway} = _pick([ 0, -300 ]); }
	return $op;
}

sub gen_claim_events
{
	return { op => 'claim_events', n => _chance(0.05) ? _pick([ 0, 10001, undef ]) : 1 + int(rand(25)) };
}

sub gen_ack_event
{
	my $s  = shift;
	my $ev = $s->{model}{events};
	my @claimed = map { $_->{id} } grep { $_->{claims} } @$ev;
	my @never   = map { $_->{id} } grep { !$_->{claims} } @$ev;
	my $v = rand();
	my $id;
	if    ($v < 0.8)  { $id = _pick(\@claimed); }
	elsif ($v < 0.92) { $id = _pick(\@never); }
	$id //= _chance(0.9) ? 66_666_666 : undef;
	return { op => 'ack_event', id => $id };
}

1;
