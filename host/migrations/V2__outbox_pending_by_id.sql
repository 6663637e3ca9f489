-- The relay marks an event it published straight after its unit of work committed by the
-- event's id (the unit of work never learns the row's seq): this index finds the unsent row of
-- an id without scanning the rows still unsent, however many a broker outage left behind.
CREATE INDEX IF NOT EXISTS platform_outbox_pending_id ON platform_outbox (id)
    WHERE sent_at IS NULL AND unsendable IS NULL;
