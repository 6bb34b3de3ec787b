-- Consent store schema, version 3 (SQLite): campaign diffing's memory.  Keep
-- in step with ../postgresql/0003_campaigns.sql.

-- One row per campaign (digest: rewrite.campaign.CampaignKey.digest, 32 hex
-- characters).  memory is rewrite.campaign.CampaignMemory.to_json() as text
-- (hashes only: no URL, no address); learned lists the copies already
-- learned (short hashes of queue ids, comma-separated) so a retried message
-- is not learned twice.  Rows not learned from since before the expiry are
-- pruned.
CREATE TABLE campaigns (
    digest     TEXT PRIMARY KEY,
    memory     TEXT NOT NULL DEFAULT '',
    copies     INTEGER NOT NULL DEFAULT 0,
    learned    TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX campaigns_updated ON campaigns (updated_at);
