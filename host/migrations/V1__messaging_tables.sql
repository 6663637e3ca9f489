-- The host's own tables in the database of every component that uses messaging: the outbox its
-- units of work publish into and the relay sends from, and the inbox that makes a delivery's
-- effect happen once. Written so that a database whose tables an earlier host made (before this
-- history was kept) takes it unchanged.
CREATE TABLE IF NOT EXISTS platform_outbox (
    seq          bigserial   PRIMARY KEY,
    id           text        NOT NULL,
    topic        text        NOT NULL,
    source       text        NOT NULL,
    content_type text        NOT NULL,
    data_schema  text,
    data         bytea       NOT NULL,
    traceparent  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz
);
ALTER TABLE platform_outbox ADD COLUMN IF NOT EXISTS unsendable text;
CREATE INDEX IF NOT EXISTS platform_outbox_pending ON platform_outbox (seq)
    WHERE sent_at IS NULL AND unsendable IS NULL;
CREATE INDEX IF NOT EXISTS platform_outbox_unsendable ON platform_outbox (seq)
    WHERE unsendable IS NOT NULL;
DROP INDEX IF EXISTS platform_outbox_unsent;
CREATE TABLE IF NOT EXISTS platform_inbox (
    source     text        NOT NULL,
    event_id   text        NOT NULL,
    topic      text        NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);
