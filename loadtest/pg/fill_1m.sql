-- Fills schema bench1m with 1,000,000 memories over 10,000 users in the PostgreSQL store's
-- tables (same DDL as src/storage/postgres.rs, indexes built after the fill), for the
-- BENCHMARKS.md pgbench rows: psql "$URL" -X -v ON_ERROR_STOP=1 -f loadtest/pg/fill_1m.sql
DROP SCHEMA IF EXISTS bench1m CASCADE; CREATE SCHEMA bench1m; SET search_path=bench1m;
CREATE TABLE memories (
            position BIGSERIAL PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            user_id TEXT NOT NULL,
            filename TEXT NOT NULL,
            stored_as TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            tags TEXT[] NOT NULL DEFAULT '{}',
            content TEXT NOT NULL,
            size_bytes BIGINT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            search TSVECTOR NOT NULL
        );
CREATE TABLE memory_tags (
            user_id TEXT NOT NULL,
            tag TEXT NOT NULL,
            position BIGINT NOT NULL REFERENCES memories (position) ON DELETE CASCADE,
            PRIMARY KEY (user_id, tag, position)
        );
CREATE TABLE users (user_id TEXT PRIMARY KEY);
CREATE TABLE idempotency (
            user_id TEXT NOT NULL,
            key TEXT NOT NULL,
            result TEXT NOT NULL,
            arguments TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (user_id, key)
        );

CREATE FUNCTION zw() RETURNS text LANGUAGE sql VOLATILE AS $$ SELECT 'w' || (greatest(floor(power(5000, random()))::int - 1, 0)) $$;
CREATE FUNCTION zs(n int) RETURNS text LANGUAGE sql VOLATILE AS $$ SELECT string_agg(zw(), ' ') FROM generate_series(1, n) $$;
INSERT INTO memories (id, user_id, filename, stored_as, description, tags, content, size_bytes, created_at, search)
SELECT gen_random_uuid()::text, 'user' || (i % 10000), 'note_' || i || '.txt', 'x_note_' || i || '.txt', d, ARRAY[t1, t2], c, length(c), now() - make_interval(secs => (1000000 - i) / 1000.0),
  setweight(to_tsvector('english', 'note ' || i || ' txt'), 'A') || setweight(to_tsvector('english', d), 'B') || setweight(to_tsvector('english', t1 || ' ' || t2), 'C') || setweight(to_tsvector('english', c), 'D')
FROM (SELECT i, zs(50) AS c, zs(6) AS d, zw() AS t1, zw() AS t2 FROM generate_series(1, 1000000) AS i) AS g;
INSERT INTO memory_tags (user_id, tag, position) SELECT user_id, unnest(tags), position FROM memories ON CONFLICT DO NOTHING;
INSERT INTO users SELECT DISTINCT user_id FROM memories;

CREATE INDEX memories_by_user_time ON memories (user_id, created_at);
CREATE INDEX memories_by_user_position ON memories (user_id, position);
CREATE INDEX memories_search ON memories USING GIN (search);
CREATE INDEX memory_tags_by_position ON memory_tags (position);
CREATE INDEX idempotency_by_time ON idempotency (created_at);
VACUUM ANALYZE memories; VACUUM ANALYZE memory_tags;
