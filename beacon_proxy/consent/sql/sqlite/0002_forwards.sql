-- Consent store schema, version 2 (SQLite): the durable queue of server-side
-- forwards (a recipient's one-click unsubscribe, sent on to the sender's own
-- RFC 8058 URL).  Keep in step with ../postgresql/0002_forwards.sql.

-- key is the recipient's normalised address (forget() deletes by it);
-- list_id '' = no list.  A row is claimed by pushing next_at forward by a
-- lease, so a node that dies mid-send leaves it to be sent again later.
CREATE TABLE forwards (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    url        TEXT NOT NULL,
    key        TEXT NOT NULL,
    address    TEXT NOT NULL,
    list_id    TEXT NOT NULL DEFAULT '',
    state      TEXT NOT NULL DEFAULT 'pending'
               CHECK (state IN ('pending', 'done', 'failed')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    next_at    TEXT NOT NULL,
    last_error TEXT
);
-- At most one pending forward per recipient, list and URL: a second
-- one-click adds nothing.
CREATE UNIQUE INDEX forwards_pending ON forwards (key, list_id, url) WHERE state = 'pending';
CREATE INDEX forwards_due ON forwards (next_at) WHERE state = 'pending';
CREATE INDEX forwards_key ON forwards (key);
