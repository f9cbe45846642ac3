#!/bin/sh
# test/demo/worker.sh TIME: the reference payment worker handles what is waiting (--once) at
# the story's time TIME (its credits.clock); what it did is printed one line per event,
# without the machine's clock.
PGOPTIONS="-c credits.clock=$1" perl "$DEMO_DIR/worker/payment_worker.pl" --once |
  sed -n -e 's/^.* event [0-9]*: charge \([a-z_]*\) \([0-9.]*\) of project [0-9]*, tx [0-9]* on \([^:]*\): \([a-z]*\).*/  payment worker: \1 of \2 charged to \3: \4/p' \
         -e 's/^.* event [0-9]*: \([a-z_]*\) project [0-9]* resource \([^:]*\): acked.*/  payment worker: passed on \1 (\2)/p' \
         -e 's/^.* event [0-9]*: \([a-z_]*\) project [0-9]*: acked.*/  payment worker: passed on \1/p' \
         -e 's/^.* event [0-9]*: refund \([0-9.]*\) of project [0-9]*, tx [0-9]* on \([^ ]*\) .*: \(refunded\|declined\).*/  payment worker: refund of \1 to \2: \3/p'
