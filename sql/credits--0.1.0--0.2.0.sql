-- credits 0.1.0 -> 0.2.0, run by ALTER EXTENSION credits UPDATE.
--
-- Every change made to the install sources (sql/install/*.sql) since 0.1.0 is also made here,
-- so that an upgraded database ends with exactly the objects of a fresh 0.2.0 install
-- (test/t/090_upgrade.pl compares them, and checks that every row is kept).
\echo Use "ALTER EXTENSION credits UPDATE TO '0.2.0'" to load this file. \quit
