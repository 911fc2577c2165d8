"""Live events: what happened to a tenant's orders and conversations, for browsers."""
