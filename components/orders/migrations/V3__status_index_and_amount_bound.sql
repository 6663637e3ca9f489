-- Listing by status (`GET /orders?status=pending`) without scanning every order.
CREATE INDEX orders_by_status ON orders (status, id DESC);

-- The same upper bound the API enforces, so no row can exist that the API cannot show.
ALTER TABLE orders ADD CONSTRAINT orders_amount_at_most_max CHECK (amount <= 100000000000);
