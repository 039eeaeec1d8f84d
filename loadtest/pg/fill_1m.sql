-- Fills schema bench1m with 1,000,000 memories over 10,000 users in the PostgreSQL store's
-- tables, for the BENCHMARKS.md pgbench rows. The tables are the store's own: `memento` runs
-- its migrations into the schema first (any command that opens the store, e.g. an export of
-- the empty store), then this file only inserts:
--   psql "$URL" -X -c 'DROP SCHEMA IF EXISTS bench1m CASCADE; CREATE SCHEMA bench1m'
--   MEMENTO_STORAGE__BACKEND=postgres \
--     MEMENTO_STORAGE__POSTGRES_URL="$URL?options=-c%20search_path%3Dbench1m" \
--     memento export --to "$(mktemp -d)/empty"
--   psql "$URL" -X -v ON_ERROR_STOP=1 -f loadtest/pg/fill_1m.sql
SET search_path=bench1m;

CREATE OR REPLACE FUNCTION zw() RETURNS text LANGUAGE sql VOLATILE AS $$ SELECT 'w' || (greatest(floor(power(5000, random()))::int - 1, 0)) $$;
CREATE OR REPLACE FUNCTION zs(n int) RETURNS text LANGUAGE sql VOLATILE AS $$ SELECT string_agg(zw(), ' ') FROM generate_series(1, n) $$;
INSERT INTO memories (id, user_id, filename, stored_as, description, tags, content, size_bytes, created_at, search)
SELECT gen_random_uuid()::text, 'user' || (i % 10000), 'note_' || i || '.txt', 'x_note_' || i || '.txt', d, ARRAY[t1, t2], c, length(c), now() - make_interval(secs => (1000000 - i) / 1000.0),
  setweight(to_tsvector('english', 'note ' || i || ' txt'), 'A') || setweight(to_tsvector('english', d), 'B') || setweight(to_tsvector('english', t1 || ' ' || t2), 'C') || setweight(to_tsvector('english', c), 'D')
FROM (SELECT i, zs(50) AS c, zs(6) AS d, zw() AS t1, zw() AS t2 FROM generate_series(1, 1000000) AS i) AS g;
INSERT INTO memory_tags (user_id, tag, position) SELECT user_id, unnest(tags), position FROM memories ON CONFLICT DO NOTHING;
INSERT INTO users SELECT DISTINCT user_id FROM memories;

VACUUM ANALYZE memories; VACUUM ANALYZE memory_tags;
