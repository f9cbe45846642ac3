\echo
\echo '== Mar 02 10:00  Two A100 instances (2.40/h) and a 500 GB volume (0.07/h) start;'
\echo '   at 10:12, 251 calls of the chat API (0.0042 each) are recorded, one of them sent twice'
\echo '   Shows: what runs is billed from the second it starts; the call sent twice counts once.'
SET credits.clock = '2026-03-02 10:00:00+00';
SELECT credits.start_instance(42, 'gpu-a100-1', '2.40') \g /dev/null
SELECT credits.start_instance(42, 'gpu-a100-2', '2.40') \g /dev/null
SELECT credits.attach_volume(42, 'vol-data-500g', '0.07') \g /dev/null
SET credits.clock = '2026-03-02 10:12:00+00';
-- One call, sent twice by the client with the same key, and a gateway's batch of 250 calls.
SELECT credits.record_usage(42, 'api:chat', '0.0042', idempotency_key => 'req-0001') \g /dev/null
SELECT credits.record_usage(42, 'api:chat', '0.0042', idempotency_key => 'req-0001') \g /dev/null
SELECT credits.record_usage_batch(array_fill(42::bigint, ARRAY[250]), array_fill('api:chat'::text, ARRAY[250]),
                                  array_fill('0.0042'::credits.credits, ARRAY[250])) \g /dev/null
SELECT * FROM resources;
