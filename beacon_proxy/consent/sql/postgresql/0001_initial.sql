-- Consent store schema, version 1 (PostgreSQL).
-- Keep in step with ../sqlite/0001_initial.sql.

-- name = 'hash_key': the store's key for the keyed hashes of addresses.
CREATE TABLE store_meta (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- One row per recipient with a consent record, keyed by the normalised
-- address.  COLLATE "C": byte order, the same listing order as SQLite.
CREATE TABLE recipients (
    key        text COLLATE "C" PRIMARY KEY,
    address    text NOT NULL,
    beacons    text NOT NULL CHECK (beacons IN ('granted', 'refused', 'unknown')),
    source     text,
    actor      text,
    updated_at timestamptz NOT NULL
);

-- Delivery suspended per address and list ('' = every list).  Looked up by
-- key_hash (HMAC-SHA256 of the key), so a suppression still holds after
-- forget() has removed the address.
CREATE TABLE suppressions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_hash     text NOT NULL,
    list_id      text NOT NULL DEFAULT '',
    address      text,
    reason       text,
    source       text,
    actor        text,
    created_at   timestamptz NOT NULL,
    forgotten_at timestamptz,
    UNIQUE (key_hash, list_id)
);

-- Append-only trail of every change; erasure may only blank address and reason.
CREATE TABLE audit (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL,
    actor   text,
    action  text NOT NULL,
    subject text NOT NULL,
    address text,
    list_id text,
    old     text,
    new     text,
    source  text,
    reason  text
);
CREATE INDEX audit_subject ON audit (subject, id);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'audit is append-only';
    END IF;
    IF NEW.id IS DISTINCT FROM OLD.id OR NEW.at IS DISTINCT FROM OLD.at
       OR NEW.actor IS DISTINCT FROM OLD.actor OR NEW.action IS DISTINCT FROM OLD.action
       OR NEW.subject IS DISTINCT FROM OLD.subject OR NEW.list_id IS DISTINCT FROM OLD.list_id
       OR NEW.old IS DISTINCT FROM OLD.old OR NEW.new IS DISTINCT FROM OLD.new
       OR NEW.source IS DISTINCT FROM OLD.source
       OR (NEW.address IS NOT NULL AND NEW.address IS DISTINCT FROM OLD.address)
       OR (NEW.reason IS NOT NULL AND NEW.reason IS DISTINCT FROM OLD.reason) THEN
        RAISE EXCEPTION 'audit entries can only be redacted';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- Opens of consenting recipients, recorded by the web endpoint.
CREATE TABLE opens (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL,
    key        text NOT NULL,
    address    text NOT NULL,
    list_id    text,
    message_id text,
    ua_class   text,
    machine    boolean NOT NULL DEFAULT false
);
CREATE INDEX opens_key ON opens (key);
CREATE INDEX opens_at ON opens (at);
