-- Consent store schema, version 5 (SQLite): the decision version, a counter
-- bumped by every change of consent or suppressions, so a process's decision
-- cache (consent.cache) knows when to forget what it holds.  Keep in step
-- with ../postgresql/0005_decision_version.sql.

-- One row; n only grows.  The relay reads it in the same statement as the
-- decisions it looks up, so it is the version of exactly those rows.
CREATE TABLE decision_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO decision_version (id, n) VALUES (1, 0);

-- Which recipients a change of versions (version_from, version_to] touched, by
-- the keyed hash of the address (as suppressions.key_hash: no address is kept),
-- written by the store in the change's transaction, so a cache forgets those
-- answers only.  A version no row covers (a change made outside beacon-proxy:
-- the triggers below still bump) makes a cache forget everything, and so does
-- a change of more than 10 000 addresses (an import: not logged one by one).
-- Rows more than 100 000 versions old are pruned.
CREATE TABLE decision_changes (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    version_from INTEGER NOT NULL,
    version_to   INTEGER NOT NULL,
    key_hash     TEXT NOT NULL
);
CREATE INDEX decision_changes_to ON decision_changes (version_to);

CREATE TRIGGER recipients_version_insert AFTER INSERT ON recipients
BEGIN
    UPDATE decision_version SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER recipients_version_update AFTER UPDATE ON recipients
BEGIN
    UPDATE decision_version SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER recipients_version_delete AFTER DELETE ON recipients
BEGIN
    UPDATE decision_version SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER suppressions_version_insert AFTER INSERT ON suppressions
BEGIN
    UPDATE decision_version SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER suppressions_version_update AFTER UPDATE ON suppressions
BEGIN
    UPDATE decision_version SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER suppressions_version_delete AFTER DELETE ON suppressions
BEGIN
    UPDATE decision_version SET n = n + 1 WHERE id = 1;
END;
