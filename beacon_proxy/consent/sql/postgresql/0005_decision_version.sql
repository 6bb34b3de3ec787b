-- Consent store schema, version 5 (PostgreSQL): the decision version, a
-- counter bumped once by every transaction that changes consent or
-- suppressions, and a notification on the channel beacon_proxy_decisions
-- (payload: the table's schema, a space, the new version) when it commits,
-- so every node's decision cache (consent.cache) forgets what it holds.
-- Keep in step with ../sqlite/0005_decision_version.sql.

-- One row; n only grows.  The relay reads it in the same statement as the
-- decisions it looks up, so it is the version of exactly those rows.
CREATE TABLE decision_version (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    n  bigint NOT NULL
);
INSERT INTO decision_version (id, n) VALUES (true, 0);

-- Which recipients a change of versions (version_from, version_to] touched, by
-- the keyed hash of the address (as suppressions.key_hash: no address is kept),
-- written by the store in the change's transaction (which bumps the version
-- itself, just before it commits, and marks the transaction so the triggers
-- below do not bump again), so a cache forgets those answers only.  A version
-- no row covers (a change made outside beacon-proxy: the triggers bump) makes
-- a cache forget everything, and so does a change of more than 10 000 addresses
-- (an import: not logged one by one).  Rows more than 100 000 versions old are
-- pruned.
CREATE TABLE decision_changes (
    id           bigserial PRIMARY KEY,
    version_from bigint NOT NULL,
    version_to   bigint NOT NULL,
    key_hash     text NOT NULL
);
CREATE INDEX decision_changes_to ON decision_changes (version_to);

-- Once per transaction (a transaction-local setting remembers it), at commit
-- (the triggers are deferred): the row lock on decision_version is held only
-- while the transaction commits, so an import does not hold up a recipient's
-- unsubscribe for its whole length, and versions follow commit order.  The
-- store bumps (and notifies) itself at the end of its changes, with the same
-- mark (query bump-decision-version): these triggers count the changes made
-- outside beacon-proxy.
CREATE FUNCTION bump_decision_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    mark text := txid_current()::text || ' ' || TG_TABLE_SCHEMA;
    version bigint;
BEGIN
    IF current_setting('beacon_proxy.decision_bump', true) IS DISTINCT FROM mark THEN
        EXECUTE format('UPDATE %I.decision_version SET n = n + 1 RETURNING n',
                       TG_TABLE_SCHEMA) INTO version;
        PERFORM set_config('beacon_proxy.decision_bump', mark, true);
        PERFORM pg_notify('beacon_proxy_decisions', TG_TABLE_SCHEMA || ' ' || version);
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER recipients_decision_version
    AFTER INSERT OR UPDATE OR DELETE ON recipients
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bump_decision_version();

CREATE CONSTRAINT TRIGGER suppressions_decision_version
    AFTER INSERT OR UPDATE OR DELETE ON suppressions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bump_decision_version();
