-- Between runs: an empty store, statistics fresh.
DROP EXTENSION IF EXISTS pg_eventstore CASCADE;
CREATE EXTENSION pg_eventstore;
\ir schema.sql
