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
