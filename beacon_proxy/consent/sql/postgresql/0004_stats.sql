-- Consent store schema, version 4 (PostgreSQL): the console dashboard's hourly
-- counts, shared by every node.  Keep in step with ../sqlite/0004_stats.sql.

-- One row per UTC hour ('2026-11-28T10') and counter name (received, delivered,
-- deferred, bounced, suppressed, held, fallback, vendor:<name>), added to by
-- every relay node once a minute (beacon_proxy.web.console.stats); no address, no
-- URL.  Rows older than 31 days are pruned.
CREATE TABLE stats_hourly (
    hour  text NOT NULL,
    name  text NOT NULL,
    value bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, name)
);
