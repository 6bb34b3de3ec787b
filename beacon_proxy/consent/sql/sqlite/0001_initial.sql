-- Consent store schema, version 1 (SQLite).  Times are UTC ISO 8601 text of
-- fixed width (2026-11-28T10:00:00.123456Z), so text order is time order.
-- Keep in step with ../postgresql/0001_initial.sql.

-- name = 'hash_key': the store's key for the keyed hashes of addresses.
CREATE TABLE store_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per recipient with a consent record, keyed by the normalised address.
CREATE TABLE recipients (
    key        TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    beacons    TEXT NOT NULL CHECK (beacons IN ('granted', 'refused', 'unknown')),
    source     TEXT,
    actor      TEXT,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;

-- Delivery suspended per address and list ('' = every list).  Looked up by
-- key_hash (HMAC-SHA256 of the key), so a suppression still holds after
-- forget() has removed the address.
CREATE TABLE suppressions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash     TEXT NOT NULL,
    list_id      TEXT NOT NULL DEFAULT '',
    address      TEXT,
    reason       TEXT,
    source       TEXT,
    actor        TEXT,
    created_at   TEXT NOT NULL,
    forgotten_at TEXT,
    UNIQUE (key_hash, list_id)
);

-- Append-only trail of every change.  subject is the key hash, so the history
-- of an address is found after erasure too; erasure may only blank address
-- and reason (enforced below).
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    actor   TEXT,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    address TEXT,
    list_id TEXT,
    old     TEXT,
    new     TEXT,
    source  TEXT,
    reason  TEXT
);
CREATE INDEX audit_subject ON audit (subject, id);

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit is append-only');
END;

CREATE TRIGGER audit_redact_only BEFORE UPDATE ON audit
WHEN NEW.id IS NOT OLD.id OR NEW.at IS NOT OLD.at OR NEW.actor IS NOT OLD.actor
  OR NEW.action IS NOT OLD.action OR NEW.subject IS NOT OLD.subject
  OR NEW.list_id IS NOT OLD.list_id OR NEW.old IS NOT OLD.old OR NEW.new IS NOT OLD.new
  OR NEW.source IS NOT OLD.source
  OR (NEW.address IS NOT NULL AND NEW.address IS NOT OLD.address)
  OR (NEW.reason IS NOT NULL AND NEW.reason IS NOT OLD.reason)
BEGIN
    SELECT RAISE(ABORT, 'audit entries can only be redacted');
END;

-- Opens of consenting recipients, recorded by the web endpoint.
CREATE TABLE opens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    key        TEXT NOT NULL,
    address    TEXT NOT NULL,
    list_id    TEXT,
    message_id TEXT,
    ua_class   TEXT,
    machine    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX opens_key ON opens (key);
CREATE INDEX opens_at ON opens (at);
