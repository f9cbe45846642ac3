-- The credits type: text input and output, the text cast, binary send/recv.
\set ECHO none
\ir test/sql/helpers.sql
\set ECHO all

--
-- Valid input: optional surrounding white space, optional sign, digits,
-- optional '.' and 1 to 6 digits.  The second column is the value printed
-- back, the third the count of micro-credits it holds.
--
SELECT to_json(input) AS input, input::credits AS value,
       (input::credits / '0.000001'::credits)::bigint AS micro
FROM (VALUES ('5'), ('-0.25'), (' 12.345678 '), ('-0.000001'), ('0.000001'),
             ('0'), ('-0'), ('+0'), ('+7.1'), ('007.50'), ('1.000000'), ('1.10'),
             ('1.123'), ('1.1234'), ('1.12345'), ('100'), ('123456789.5'),
             (E'\t 3.5\n'), (E'\r\f' || chr(11) || '-2 '),
             ('000000000000000000000000000000000000000001.5')) AS v(input);

-- The smallest and the largest value parse, print, and round-trip.
SELECT '-9223372036854.775808'::credits AS smallest,
       '9223372036854.775807'::credits AS largest,
       '-9223372036854.775808'::credits::text::credits = '-9223372036854.775808'::credits AS smallest_round_trip,
       '9223372036854.775807'::credits::text::credits = '9223372036854.775807'::credits AS largest_round_trip;
SELECT '-9223372036854.775808'::credits::numeric = -9223372036854.775808 AS smallest_is_exact,
       '9223372036854.775807'::credits::numeric = 9223372036854.775807 AS largest_is_exact;

--
-- Output: at least 2, at most 6 fraction digits, no trailing zeros past
-- the second.  Built from micro-credit counts, independent of the parser.
--
SELECT micro, micro * '0.000001'::credits AS printed
FROM unnest(ARRAY[0, 1, 10, 100, 1000, 10000, 100000, 120000, 123000, 123400,
                  123450, 123456, 1000000, 1000001, 1010000, 5000000, 12345678,
                  -1, -10, -10000, -1000000, -1230000, -1234567]::bigint[]) AS micro;

--
-- Out of range, one micro-credit past either end and far beyond: 22003,
-- naming the input.
--
SELECT to_json(input) AS input, pg_temp.fails(format('SELECT %L::credits', input)) AS result
FROM (VALUES ('9223372036854.775808'), ('-9223372036854.775809'),
             ('9223372036855'), ('-9223372036855'), (' +9223372036854.775808 '),
             ('99999999999999999999999999999999'),
             ('-99999999999999999999999999999999.999999')) AS v(input);

--
-- Malformed input: 22P02 naming the input.  A malformed input is a syntax
-- error even when its digits would also be out of range.  Only ASCII digits
-- and ASCII white space count: a no-break space (U+00A0), an Arabic-Indic
-- and a full-width five are refused.
--
SELECT to_json(input) AS input, pg_temp.fails(format('SELECT %L::credits', input)) AS result
FROM (VALUES (''), (' '), ('1e3'), ('$5'), ('1.2.3'), ('NaN'), ('nan'), ('Infinity'),
             ('-Infinity'), ('inf'), ('1.1234567'), ('1.0000000'), ('0.0000001'),
             ('.5'), ('5.'), ('-.5'), ('+'), ('-'), ('.'), ('--5'), ('+-5'), ('- 5'),
             ('1 000'), ('1,5'), ('1_000'), ('0x10'), ('5 credits'), ('5cr'),
             ('1.5e2'), ('USD 5'), (E'\u00a05'), (E'5\u00a0'), ('٥'), ('５'),
             ('99999999999999999999x'), ('99999999999999999999.1234567')) AS v(input);

-- A NULL stays NULL.
SELECT NULL::credits AS null_value, (NULL::text)::credits AS null_from_text;

--
-- The text cast and string contexts.
--
SELECT '1.5'::credits::text AS as_text, pg_typeof('1.5'::credits::text),
       'balance: ' || '1.5'::credits AS concatenated,
       format('%s', '-0.000001'::credits) AS formatted,
       '7.25'::text::credits AS from_text;
CREATE TEMP TABLE texts (t text);
INSERT INTO texts VALUES ('12.345678'::credits);  -- assignment cast to text
SELECT t FROM texts;

-- Arrays of credits.
SELECT '{1.5, -2, 0.000001, NULL}'::credits[] AS arr,
       array_to_string('{1.5, -2}'::credits[], ';') AS joined;
SELECT pg_temp.fails($$SELECT '{1.5, 1e3}'::credits[]$$) AS bad_element;

--
-- Binary output: 8 bytes, big-endian, the count of micro-credits.
--
SELECT v AS value, credits_send(v) AS sent
FROM unnest('{0, 1.5, -0.000001, 9223372036854.775807, -9223372036854.775808}'::credits[]) AS v;

--
-- Binary COPY round trip (recv): every value comes back identical.
--
CREATE TEMP TABLE io_out (id int, c credits);
INSERT INTO io_out VALUES (1, '0'), (2, '1.5'), (3, '-0.000001'), (4, '12.345678'),
    (5, '9223372036854.775807'), (6, '-9223372036854.775808'), (7, NULL);
\copy io_out TO 'results/type_io_copy.bin' WITH (FORMAT binary)
CREATE TEMP TABLE io_in (id int, c credits);
\copy io_in FROM 'results/type_io_copy.bin' WITH (FORMAT binary)
SELECT o.id, o.c AS sent, i.c AS received, o.c IS NOT DISTINCT FROM i.c AS same
FROM io_out o FULL JOIN io_in i USING (id) ORDER BY id;

--
-- recv takes exactly 8 bytes: the binary file of a bytea column read as
-- credits.  8 bytes are any int64, so any count of micro-credits; fewer or
-- more bytes are refused.
--
CREATE TEMP TABLE raw_out (id int, b bytea);
INSERT INTO raw_out VALUES (1, '\x0102030405060708'), (2, '\xffffffffffffffff'),
    (3, '\x8000000000000000'), (4, '\x7fffffffffffffff');
\copy raw_out TO 'results/type_io_raw8.bin' WITH (FORMAT binary)
CREATE TEMP TABLE raw_in (id int, c credits);
\copy raw_in FROM 'results/type_io_raw8.bin' WITH (FORMAT binary)
SELECT id, b AS bytes, c AS received FROM raw_out JOIN raw_in USING (id) ORDER BY id;
TRUNCATE raw_out, raw_in;
INSERT INTO raw_out VALUES (1, '\x01020304');
\copy raw_out TO 'results/type_io_raw4.bin' WITH (FORMAT binary)
TRUNCATE raw_out;
INSERT INTO raw_out VALUES (1, '\x010203040506070809');
\copy raw_out TO 'results/type_io_raw9.bin' WITH (FORMAT binary)
\set cwd `pwd`
SELECT pg_temp.fails(format('COPY raw_in FROM %L (FORMAT binary)', :'cwd' || '/results/type_io_raw4.bin')) AS four_bytes;
SELECT pg_temp.fails(format('COPY raw_in FROM %L (FORMAT binary)', :'cwd' || '/results/type_io_raw9.bin')) AS nine_bytes;
SELECT count(*) AS rows_taken FROM raw_in;
