-- Consent store schema, version 2 (PostgreSQL): the durable queue of
-- server-side forwards.  Keep in step with ../sqlite/0002_forwards.sql.

-- key is the recipient's normalised address (forget() deletes by it);
-- list_id '' = no list.  A row is claimed by pushing next_at forward by a
-- lease (FOR UPDATE SKIP LOCKED), so nodes sharing the database never send
-- one row at the same time, and a node that dies mid-send leaves it to be
-- sent again later.
CREATE TABLE forwards (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url        text NOT NULL,
    key        text NOT NULL,
    address    text NOT NULL,
    list_id    text NOT NULL DEFAULT '',
    state      text NOT NULL DEFAULT 'pending'
               CHECK (state IN ('pending', 'done', 'failed')),
    attempts   integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    next_at    timestamptz NOT NULL,
    last_error text
);
-- At most one pending forward per recipient, list and URL: a second
-- one-click adds nothing.
CREATE UNIQUE INDEX forwards_pending ON forwards (key, list_id, url) WHERE state = 'pending';
CREATE INDEX forwards_due ON forwards (next_at) WHERE state = 'pending';
CREATE INDEX forwards_key ON forwards (key);
