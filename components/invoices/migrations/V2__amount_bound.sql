-- The same upper bound as an order's amount, so no invoice can exist that the API cannot show.
ALTER TABLE invoices ADD CONSTRAINT invoices_amount_at_most_max CHECK (amount <= 100000000000);
