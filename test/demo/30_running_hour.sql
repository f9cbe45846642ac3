\echo
\echo '== Mar 02 10:30  The billing page while the hour runs'
\echo '   Shows: usage accrues as it happens, is held back from what is available, and is listed.'
\echo '   (The API line is 251 x 0.0042 = 1.0542; the burn rate counts API usage once its hour ends.)'
SET credits.clock = '2026-03-02 10:30:00+00';
SELECT * FROM billing_page;
SELECT date, description, amount, status FROM history;
