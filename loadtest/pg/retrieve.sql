\set u random(0, 9999)
\set w1 random_zipfian(0, 4999, 1.01)
\set w2 random_zipfian(0, 4999, 1.01)
SELECT id, filename, stored_as, description, tags, created_at, size_bytes, left(content, 300) FROM memories WHERE user_id = 'user' || :u AND search @@ websearch_to_tsquery('english', 'w' || :w1 || ' or w' || :w2) ORDER BY ts_rank_cd('{0.3, 0.6, 0.6, 1.0}', search, websearch_to_tsquery('english', 'w' || :w1 || ' or w' || :w2), 1) DESC, created_at DESC, position DESC LIMIT 10 OFFSET 0;
