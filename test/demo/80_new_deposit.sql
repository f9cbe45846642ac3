\echo
\echo '== Mar 03 08:30  The owner buys 60.00 credits with the Visa card'
\echo '   Shows: the volume, with its data, is accessible again; terminated instances stay so.'
SET credits.clock = '2026-03-03 08:30:00+00';
SELECT credits.add_credits(42, '60.00', :visa) \g /dev/null
\! "$DEMO_DIR/demo/worker.sh" 2026-03-03T08:30:30Z
SELECT * FROM resources;
SELECT * FROM billing_page;
