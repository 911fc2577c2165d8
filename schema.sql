-- orderbot schema. Idempotent: `orderbot migrate` applies it on every deploy.

CREATE TABLE IF NOT EXISTS orders (
    id                  BIGSERIAL PRIMARY KEY,
    tenant              TEXT        NOT NULL DEFAULT 'default',
    provider            TEXT        NOT NULL,
    source_message_id   TEXT        NOT NULL,
    client_id           TEXT        NOT NULL,
    -- The seed's column, kept for its reports: the client id when the order came
    -- through Chat2Desk.
    chat2desk_client_id TEXT GENERATED ALWAYS AS
        (CASE WHEN provider = 'chat2desk' THEN client_id END) STORED,
    client_phone        TEXT        NOT NULL,
    delivery_address    TEXT        NOT NULL,
    quantity            INTEGER     NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    status              TEXT        NOT NULL DEFAULT 'CONFIRMED',
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A redelivered confirmation can never create a second order.
    CONSTRAINT orders_source_message_unique UNIQUE (tenant, provider, source_message_id)
);

CREATE INDEX IF NOT EXISTS orders_tenant_created_idx ON orders (tenant, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS orders_tenant_client_idx ON orders (tenant, provider, client_id);

CREATE TABLE IF NOT EXISTS order_events (
    id          BIGSERIAL PRIMARY KEY,
    order_id    BIGINT      NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    from_status TEXT,
    to_status   TEXT        NOT NULL,
    actor       TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS order_events_order_idx ON order_events (order_id, id);
