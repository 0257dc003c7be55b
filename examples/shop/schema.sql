-- Example shop schema used by the 1C flow (onec_invoice), the demo and the tests.
-- Portable between PostgreSQL and SQLite. A shop with its own schema keeps its tables and adapts
-- the SQL in workflows/onec_invoice.toml ([source] and [on_done]); Ferry's code does not change.

CREATE TABLE IF NOT EXISTS customers (
    id       BIGINT PRIMARY KEY,
    name     TEXT NOT NULL,
    phone    TEXT NOT NULL DEFAULT '',
    address  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS orders (
    id                      BIGINT PRIMARY KEY,
    customer_id             BIGINT NOT NULL REFERENCES customers (id),
    -- new | paid | cancelled: the invoice goes to 1C only once the order is paid
    status                  TEXT NOT NULL DEFAULT 'new',
    invoice_number          TEXT NOT NULL,
    invoice_date            TEXT NOT NULL,          -- YYYY-MM-DD
    delivery_cost           NUMERIC(14, 2) NOT NULL DEFAULT 0,
    -- set by the onec_invoice workflow's on_done SQL, in the transaction that marks the
    -- outbox row done; stays FALSE on failure so the export can be repeated
    invoice_exported_to_1c  BOOLEAN NOT NULL DEFAULT FALSE,
    invoice_exported_at     TIMESTAMP,
    onec_response           TEXT
);

CREATE TABLE IF NOT EXISTS order_items (
    order_id  BIGINT NOT NULL REFERENCES orders (id),
    line_no   INTEGER NOT NULL,
    articul   TEXT NOT NULL,
    name      TEXT NOT NULL,
    quantity  NUMERIC(14, 3) NOT NULL,
    price     NUMERIC(14, 2) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
