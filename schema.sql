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

-- The order's life after the dialog (issue 5) --------------------------------------------

-- Where and how to tell the customer about their order: the dialog's language and the
-- channel the order came through (a notification goes out on the same one).
ALTER TABLE orders ADD COLUMN IF NOT EXISTS lang TEXT NOT NULL DEFAULT 'ru';
ALTER TABLE orders ADD COLUMN IF NOT EXISTS transport TEXT;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS channel_id TEXT;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS rating SMALLINT CHECK (rating BETWEEN 1 AND 5);
ALTER TABLE orders ADD COLUMN IF NOT EXISTS rated_at TIMESTAMPTZ;

-- A shared location (the address is then its name or its coordinates), and the links of
-- the photos, voice notes and files the customer sent during the dialog:
-- [{"url": …, "content_type": …}, …].
ALTER TABLE orders ADD COLUMN IF NOT EXISTS latitude DOUBLE PRECISION
    CHECK (latitude BETWEEN -90 AND 90);
ALTER TABLE orders ADD COLUMN IF NOT EXISTS longitude DOUBLE PRECISION
    CHECK (longitude BETWEEN -180 AND 180);
ALTER TABLE orders ADD COLUMN IF NOT EXISTS attachments JSONB NOT NULL DEFAULT '[]';

-- dialog/lifecycle.py is the one place transitions are checked; this only keeps a manual
-- UPDATE from writing a status no process can read. A new status needs the constraint
-- dropped and added again here.
DO $$
BEGIN
    ALTER TABLE orders ADD CONSTRAINT orders_status_known CHECK (status IN
        ('CONFIRMED', 'PREPARING', 'OUT_FOR_DELIVERY', 'DELIVERED', 'RATED', 'CANCELLED'));
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- The operator list pages by id, newest first, within a tenant (optionally one status).
CREATE INDEX IF NOT EXISTS orders_tenant_id_idx ON orders (tenant, id DESC);
CREATE INDEX IF NOT EXISTS orders_tenant_status_id_idx ON orders (tenant, status, id DESC);

-- The transactional outbox of status notifications: an event that must be told to the
-- customer is written with notified_at NULL in the transaction that changes the status, and
-- marked once its notification was confirmed by the broker. The default marks every other
-- event (the dialog's CONFIRMED, the customer's RATED, and all rows older than this column)
-- as needing nothing, so adding the column never floods customers with old news.
ALTER TABLE order_events ADD COLUMN IF NOT EXISTS notified_at TIMESTAMPTZ DEFAULT now();
-- The customer message that caused the event (their rating): a redelivered message finds
-- its own event instead of rating twice.
ALTER TABLE order_events ADD COLUMN IF NOT EXISTS source_message_id TEXT;

CREATE INDEX IF NOT EXISTS order_events_pending_idx ON order_events (id)
    WHERE notified_at IS NULL;

-- Tenants (issue 4) ----------------------------------------------------------------------

-- One row per business. Credentials are Fernet tokens (ORDERBOT_MASTER_KEY), never
-- plaintext; the webhook token is also kept as its SHA-256, the key the server looks
-- it up by. A deployment's own settings tenant needs no row (a row with its slug wins).
CREATE TABLE IF NOT EXISTS tenants (
    slug                           TEXT        PRIMARY KEY
                                   CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name                           TEXT        NOT NULL,
    active                         BOOLEAN     NOT NULL DEFAULT true,
    chat2desk_api_token_enc        TEXT,
    chat2desk_webhook_token_sha256 TEXT        UNIQUE,
    chat2desk_webhook_token_enc    TEXT,
    twilio_account_sid             TEXT,
    twilio_auth_token_enc          TEXT,
    twilio_whatsapp_from           TEXT        UNIQUE,
    webhook_rate_limit_customer    INTEGER     CHECK (webhook_rate_limit_customer > 0),
    send_rate_limit                INTEGER     CHECK (send_rate_limit > 0),
    -- The operator API key of this business, as its SHA-256 (the key is shown once, at add).
    operator_api_key_sha256        TEXT        UNIQUE,
    -- Chat2Desk's X-Signature for this business: off, check, require (NULL: the setting).
    chat2desk_webhook_signature    TEXT
                                   CHECK (chat2desk_webhook_signature IN ('off', 'check', 'require')),
    -- The region whose national phone forms the dialog reads, and the other regions whose
    -- numbers it takes (NULL: PHONE_REGION, PHONE_REGIONS_ALLOWED).
    phone_region                   TEXT        CHECK (phone_region ~ '^[A-Z]{2}$'),
    phone_regions_allowed          TEXT[],
    -- The Chat2Desk operator group a hand-off is transferred to (NULL: the setting).
    chat2desk_operator_group_id    TEXT        CHECK (chat2desk_operator_group_id ~ '^[0-9]{1,20}$'),
    -- What the dialog's texts say of the business (NULL: BUSINESS_NAME, DELIVERY_MINUTES).
    business_name                  TEXT        CHECK (length(business_name) BETWEEN 1 AND 100),
    delivery_minutes               INTEGER     CHECK (delivery_minutes BETWEEN 1 AND 1440),
    created_at                     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every process caches the table and LISTENs here, so a change reaches them without a
-- restart (they also re-read it every TENANTS_RELOAD_INTERVAL in case a NOTIFY is missed).
-- Added after the table first shipped: a database migrated before gets the column too.
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS operator_api_key_sha256 TEXT UNIQUE;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS chat2desk_webhook_signature TEXT
    CHECK (chat2desk_webhook_signature IN ('off', 'check', 'require'));
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS phone_region TEXT
    CHECK (phone_region ~ '^[A-Z]{2}$');
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS phone_regions_allowed TEXT[];
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS chat2desk_operator_group_id TEXT
    CHECK (chat2desk_operator_group_id ~ '^[0-9]{1,20}$');
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS business_name TEXT
    CHECK (length(business_name) BETWEEN 1 AND 100);
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS delivery_minutes INTEGER
    CHECK (delivery_minutes BETWEEN 1 AND 1440);
-- A tenant's own inbound limit is gone: the queue is the buffer, nothing is refused.
ALTER TABLE tenants DROP COLUMN IF EXISTS webhook_rate_limit_tenant;

CREATE OR REPLACE FUNCTION orderbot_tenants_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('orderbot_tenants', OLD.slug);
    ELSE
        PERFORM pg_notify('orderbot_tenants', NEW.slug);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER tenants_notify
    AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION orderbot_tenants_notify();

-- Conversation history ----------------------------------------------------------------

-- One row per customer of a tenant on a provider; its messages hang off it. client_phone is
-- the number the customer writes from, where the channel tells it (a WhatsApp sender, a
-- Chat2Desk profile), and phone_digits its digits, which the operators search by.
CREATE TABLE IF NOT EXISTS conversations (
    id              BIGSERIAL   PRIMARY KEY,
    tenant          TEXT        NOT NULL,
    provider        TEXT        NOT NULL,
    client_id       TEXT        NOT NULL,
    client_phone    TEXT,
    phone_digits    TEXT GENERATED ALWAYS AS
        (NULLIF(regexp_replace(coalesce(client_phone, ''), '[^0-9]', '', 'g'), '')) STORED,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_message_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT conversations_client_unique UNIQUE (tenant, provider, client_id)
);

CREATE INDEX IF NOT EXISTS conversations_tenant_id_idx ON conversations (tenant, id DESC);
CREATE INDEX IF NOT EXISTS conversations_tenant_phone_idx
    ON conversations (tenant, phone_digits, id DESC) WHERE phone_digits IS NOT NULL;
CREATE INDEX IF NOT EXISTS conversations_client_idx ON conversations (tenant, client_id, id DESC);
-- Every batch moves last_message_at, so no index may cover it: an update that changes no
-- indexed column and finds room on its page is a heap-only (HOT) tuple, with no new entry in
-- any of the indexes above. The fillfactor leaves that room (new pages; old ones as they
-- fill). The purge, which runs rarely, scans the table instead.
DROP INDEX IF EXISTS conversations_last_message_idx;
ALTER TABLE conversations SET (fillfactor = 70);

-- Every customer message (direction 'in', keyed by the provider's message id) and every reply
-- (direction 'out', keyed by our reply id), once: a redelivered step or a re-sent reply finds
-- its row. A status only moves forward (orderbot_message_status_rank): a late 'sent' never
-- undoes a 'delivered'.
CREATE TABLE IF NOT EXISTS messages (
    id                  BIGSERIAL   PRIMARY KEY,
    conversation_id     BIGINT      NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    tenant              TEXT        NOT NULL,
    provider            TEXT        NOT NULL,
    direction           TEXT        NOT NULL CHECK (direction IN ('in', 'out')),
    message_key         TEXT        NOT NULL,
    provider_message_id TEXT,
    reply_id            TEXT,
    text                TEXT        NOT NULL,
    at                  TIMESTAMPTZ NOT NULL,
    status              TEXT        NOT NULL CHECK (status IN
        ('received', 'queued', 'failed', 'dlq', 'sent', 'delivered', 'undelivered', 'read')),
    status_at           TIMESTAMPTZ NOT NULL,
    error               TEXT,
    CONSTRAINT messages_key_unique UNIQUE (conversation_id, direction, message_key)
);

CREATE INDEX IF NOT EXISTS messages_conversation_idx ON messages (conversation_id, id);
CREATE INDEX IF NOT EXISTS messages_provider_id_idx ON messages (tenant, provider, provider_message_id)
    WHERE direction = 'out' AND provider_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_at_idx ON messages (at);

CREATE OR REPLACE FUNCTION orderbot_message_status_rank(status TEXT) RETURNS INTEGER
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'received' THEN 0 WHEN 'queued' THEN 1 WHEN 'failed' THEN 2 WHEN 'dlq' THEN 3
        WHEN 'sent' THEN 4 WHEN 'delivered' THEN 5 WHEN 'undelivered' THEN 5 WHEN 'read' THEN 6
        ELSE -1 END
$$;

-- A provider's delivery status that came before the reply's row was written (the history
-- writer batches; a callback can be quicker): applied when the row arrives, or by the purge.
CREATE TABLE IF NOT EXISTS delivery_receipts (
    tenant              TEXT        NOT NULL,
    provider            TEXT        NOT NULL,
    provider_message_id TEXT        NOT NULL,
    status              TEXT        NOT NULL,
    status_at           TIMESTAMPTZ NOT NULL,
    error               TEXT,
    PRIMARY KEY (tenant, provider, provider_message_id)
);
