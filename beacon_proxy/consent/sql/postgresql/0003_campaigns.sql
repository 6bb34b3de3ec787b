-- Consent store schema, version 3 (PostgreSQL): campaign diffing's memory,
-- shared by every node.  Keep in step with ../sqlite/0003_campaigns.sql.

-- One row per campaign (digest: rewrite.campaign.CampaignKey.digest, 32 hex
-- characters).  memory is rewrite.campaign.CampaignMemory.to_json() as text
-- (hashes only: no URL, no address); learned lists the copies already
-- learned (short hashes of queue ids, comma-separated) so a retried message
-- is not learned twice.  A row is changed under FOR UPDATE, so nodes learn
-- one copy at a time; rows not learned from since before the expiry are
-- pruned.
CREATE TABLE campaigns (
    digest     text PRIMARY KEY,
    memory     text NOT NULL DEFAULT '',
    copies     integer NOT NULL DEFAULT 0,
    learned    text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX campaigns_updated ON campaigns (updated_at);
