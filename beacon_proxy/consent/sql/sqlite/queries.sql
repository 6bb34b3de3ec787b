-- Named queries for the SQLite store.  Each starts at a "-- name: NAME" line
-- and runs to the next one.  Parameters are numbered (?1, ?2, ...) in the
-- same order as in ../postgresql/queries.sql; lists are passed as JSON arrays.

-- name: lock-migrations
-- (BEGIN IMMEDIATE already holds the write lock.)
SELECT 1;

-- name: create-migrations
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
);

-- name: applied-migrations
SELECT version FROM schema_migrations ORDER BY version;

-- name: record-migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3);

-- name: init-meta
INSERT INTO store_meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING;

-- name: get-meta
SELECT value FROM store_meta WHERE name = ?1;

-- name: decisions
-- ?1 keys, ?2 their hashes (parallel JSON arrays), ?3 the list id ('' for none).
-- The hash is picked by position: a join of two json_each tables would scan n x n.
-- suppressed: NULL (none), '' (for every list: it sorts first) or the list id.
-- version: the decision version of the same snapshot (one statement), on every
-- row; with no keys, one row with the version alone (key NULL).
SELECT v.n AS version, d.key AS key, d.beacons AS beacons, d.suppressed AS suppressed
FROM decision_version AS v
LEFT JOIN (
    SELECT k.value AS key, r.beacons AS beacons,
           (SELECT MIN(s.list_id) FROM suppressions s
            WHERE s.key_hash = json_extract(?2, '$[' || k.key || ']')
              AND s.list_id IN ('', ?3)) AS suppressed
    FROM json_each(?1) AS k
    LEFT JOIN recipients AS r ON r.key = k.value
) AS d ON 1;

-- name: decision-version
-- Inside a write transaction (SQLite: the single writer), the version now.
SELECT n AS version FROM decision_version;

-- name: bump-decision-version
-- At the end of a change's transaction: the version now (SQLite's triggers bumped
-- it once per row changed); ?1 the schema (unused: one schema per file).
SELECT n AS version, ?1 AS mark FROM decision_version;

-- name: decision-schema
SELECT 'main' AS schema;

-- name: log-decision-change
INSERT INTO decision_changes (version_from, version_to, key_hash) VALUES (?1, ?2, ?3);

-- name: prune-decision-changes
DELETE FROM decision_changes WHERE version_to < ?1;

-- name: decision-changes
-- The changes of versions (?1, ?2], oldest first, at most ?3 rows.
SELECT version_from, version_to, key_hash FROM decision_changes
WHERE version_to > ?1 AND version_to <= ?2 ORDER BY version_to LIMIT ?3;

-- name: get-consent
SELECT address, beacons, source, actor, updated_at FROM recipients WHERE key = ?1;

-- name: consent-states
SELECT key, address, beacons, source FROM recipients WHERE key IN (SELECT value FROM json_each(?1));

-- name: upsert-consent
INSERT INTO recipients (key, address, beacons, source, actor, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (key) DO UPDATE SET
    address = excluded.address, beacons = excluded.beacons, source = excluded.source,
    actor = excluded.actor, updated_at = excluded.updated_at;

-- name: delete-consent
DELETE FROM recipients WHERE key = ?1;

-- name: list-consent
-- ?1 after this key, ?2 only this state (or NULL), ?3 page size
SELECT key, address, beacons, source, actor, updated_at FROM recipients
WHERE key > ?1 AND (?2 IS NULL OR beacons = ?2)
ORDER BY key LIMIT ?3;

-- name: suppressions-of
SELECT id, address, list_id, reason, source, actor, created_at, forgotten_at
FROM suppressions WHERE key_hash = ?1 ORDER BY list_id;

-- name: suppression-keys
SELECT key_hash, list_id, address, reason, source FROM suppressions WHERE key_hash IN (SELECT value FROM json_each(?1));

-- name: upsert-suppression
INSERT INTO suppressions (key_hash, list_id, address, reason, source, actor, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (key_hash, list_id) DO UPDATE SET
    address = excluded.address, reason = excluded.reason, source = excluded.source,
    actor = excluded.actor, forgotten_at = NULL;

-- name: delete-suppression
DELETE FROM suppressions WHERE key_hash = ?1 AND list_id = ?2;

-- name: list-suppressions
-- ?1 after this id, ?2 only this list ('' = global ones, NULL = all), ?3 page size
SELECT id, address, list_id, reason, source, actor, created_at, forgotten_at
FROM suppressions
WHERE id > ?1 AND (?2 IS NULL OR list_id = ?2)
ORDER BY id LIMIT ?3;

-- name: forget-suppressions
UPDATE suppressions SET address = NULL, reason = NULL, forgotten_at = ?2
WHERE key_hash = ?1 AND forgotten_at IS NULL;

-- name: insert-audit
INSERT INTO audit (at, actor, action, subject, address, list_id, old, new, source, reason)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10);

-- name: audit-of
SELECT id, at, actor, action, address, list_id, old, new, source, reason FROM audit
WHERE subject = ?1 AND id > ?2 ORDER BY id LIMIT ?3;

-- name: audit-of-recent
-- the console: ?1 subject, ?2 how many; newest first
SELECT id, at, actor, action, address, list_id, old, new, source, reason FROM audit
WHERE subject = ?1 ORDER BY id DESC LIMIT ?2;

-- name: opens-of-recent
-- the console: ?1 key, ?2 how many; newest first
SELECT id, at, address, list_id, message_id, ua_class, machine FROM opens
WHERE key = ?1 ORDER BY id DESC LIMIT ?2;

-- name: audit-all
SELECT id, at, actor, action, address, list_id, old, new, source, reason FROM audit
WHERE id > ?1 ORDER BY id LIMIT ?2;

-- name: redact-audit
UPDATE audit SET address = NULL, reason = NULL
WHERE subject = ?1 AND (address IS NOT NULL OR reason IS NOT NULL);

-- name: open-consents
-- record_opens, inside its write transaction: each key's recorded address and state.
SELECT key, address, beacons FROM recipients WHERE key IN (SELECT value FROM json_each(?1));

-- name: insert-open
INSERT INTO opens (at, key, address, list_id, message_id, ua_class, machine)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7);

-- name: list-opens
-- ?1 after this id, ?2 since (or NULL), ?3 key (or NULL), ?4 list (or NULL), ?5 page size,
-- ?6 machine opens only (1), people's only (0), or both (NULL)
SELECT id, at, address, list_id, message_id, ua_class, machine FROM opens
WHERE id > ?1 AND (?2 IS NULL OR at >= ?2) AND (?3 IS NULL OR key = ?3)
  AND (?4 IS NULL OR list_id = ?4) AND (?6 IS NULL OR machine = ?6)
ORDER BY id LIMIT ?5;

-- name: delete-opens-of
DELETE FROM opens WHERE key = ?1;

-- name: queue-forward
-- ?1 url, ?2 key, ?3 address, ?4 list id ('' = none), ?5 now.  Nothing when
-- the same forward is already pending (then: pending-forward).
INSERT INTO forwards (url, key, address, list_id, created_at, next_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?5)
ON CONFLICT (key, list_id, url) WHERE state = 'pending' DO NOTHING
RETURNING id;

-- name: pending-forward
SELECT id FROM forwards WHERE key = ?1 AND list_id = ?2 AND url = ?3 AND state = 'pending';

-- name: claim-forwards
-- ?1 now, ?2 the end of the lease, ?3 at most this many.  The write
-- transaction (BEGIN IMMEDIATE) makes the claim atomic.
UPDATE forwards SET next_at = ?2, attempts = attempts + 1
WHERE id IN (SELECT id FROM forwards WHERE state = 'pending' AND next_at <= ?1
             ORDER BY next_at, id LIMIT ?3)
RETURNING id, url, address, list_id, attempts, created_at, next_at, state, last_error;

-- name: forward-done
-- ?1 id, ?2 now (kept as next_at: when it ended)
UPDATE forwards SET state = 'done', next_at = ?2, last_error = NULL
WHERE id = ?1 AND state = 'pending';

-- name: forward-retry
-- ?1 id, ?2 next attempt, ?3 the error
UPDATE forwards SET next_at = ?2, last_error = ?3 WHERE id = ?1 AND state = 'pending';

-- name: forward-failed
-- ?1 id, ?2 now (kept as next_at: when it ended), ?3 the error
UPDATE forwards SET state = 'failed', next_at = ?2, last_error = ?3
WHERE id = ?1 AND state = 'pending';

-- name: list-forwards
-- ?1 after this id, ?2 only this state (or NULL), ?3 page size
SELECT id, url, address, list_id, attempts, created_at, next_at, state, last_error
FROM forwards WHERE id > ?1 AND (?2 IS NULL OR state = ?2)
ORDER BY id LIMIT ?3;

-- name: prune-forwards
-- finished (done or failed) before ?1
DELETE FROM forwards WHERE state <> 'pending' AND next_at < ?1;

-- name: delete-forwards-of
DELETE FROM forwards WHERE key = ?1;

-- name: ensure-campaign
-- ?1 digest, ?2 now.  The row to change (nothing when it exists).
INSERT INTO campaigns (digest, created_at, updated_at) VALUES (?1, ?2, ?2)
ON CONFLICT (digest) DO NOTHING;

-- name: lock-campaign
-- The write transaction (BEGIN IMMEDIATE) is the lock.
SELECT memory, copies, learned, updated_at FROM campaigns WHERE digest = ?1;

-- name: get-campaign
SELECT memory, copies, learned, updated_at FROM campaigns WHERE digest = ?1;

-- name: save-campaign
-- ?1 digest, ?2 memory, ?3 copies, ?4 learned, ?5 now
UPDATE campaigns SET memory = ?2, copies = ?3, learned = ?4, updated_at = ?5 WHERE digest = ?1;

-- name: prune-campaigns
-- not learned from since ?1
DELETE FROM campaigns WHERE updated_at < ?1;

-- name: add-stat
-- the console dashboard: ?1 hour ('2026-11-28T10'), ?2 counter name, ?3 to add
INSERT INTO stats_hourly (hour, name, value) VALUES (?1, ?2, ?3)
ON CONFLICT (hour, name) DO UPDATE SET value = stats_hourly.value + excluded.value;

-- name: stats-since
-- ?1 the first hour wanted
SELECT hour, name, value FROM stats_hourly WHERE hour >= ?1 ORDER BY hour, name;

-- name: prune-stats
-- ?1 the first hour kept
DELETE FROM stats_hourly WHERE hour < ?1;

-- name: opens-by-hour
-- the console dashboard: opens since ?1, counted by UTC hour and machine
SELECT substr(at, 1, 13) AS hour, machine, count(*) AS n FROM opens
WHERE at >= ?1 GROUP BY 1, 2 ORDER BY 1, 2;
