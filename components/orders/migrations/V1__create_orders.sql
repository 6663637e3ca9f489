-- Orders as the Orders service keeps them. Amounts are whole minor units (cents).
CREATE TABLE orders (
    id              uuid        PRIMARY KEY,
    customer_id     uuid        NOT NULL,
    amount          bigint      NOT NULL CHECK (amount > 0),
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'invoiced')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- The client's Idempotency-Key, when it sent one: a retried POST finds its order here.
    idempotency_key text        UNIQUE
);

-- Ids are UUIDv7, so ordering by id is ordering by creation; pages are keyset on id.
CREATE INDEX orders_by_customer ON orders (customer_id, id DESC);
