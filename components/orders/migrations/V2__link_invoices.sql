-- The invoice issued for an order, once Invoices has announced it.
ALTER TABLE orders ADD COLUMN invoice_id uuid;
