-- Invoices as the Invoices service keeps them. One invoice per order, whatever is delivered.
CREATE TABLE invoices (
    id          uuid        PRIMARY KEY,
    order_id    uuid        NOT NULL UNIQUE,
    customer_id uuid        NOT NULL,
    amount      bigint      NOT NULL CHECK (amount > 0),
    status      text        NOT NULL DEFAULT 'issued' CHECK (status IN ('issued')),
    issued_at   timestamptz NOT NULL DEFAULT now()
);

-- Ids are UUIDv7, so ordering by id is ordering by issue time; pages are keyset on id.
CREATE INDEX invoices_by_customer ON invoices (customer_id, id DESC);
