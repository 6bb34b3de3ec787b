-- Consent store schema, version 4 (SQLite): the console dashboard's hourly counts.
-- Keep in step with ../postgresql/0004_stats.sql.

-- One row per UTC hour ('2026-11-28T10') and counter name (received, delivered,
-- deferred, bounced, suppressed, held, fallback, vendor:<name>), added to by
-- every relay node once a minute (beacon_proxy.web.console.stats); no address, no
-- URL.  Rows older than 31 days are pruned.
CREATE TABLE stats_hourly (
    hour  TEXT NOT NULL,
    name  TEXT NOT NULL,
    value INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, name)
);
