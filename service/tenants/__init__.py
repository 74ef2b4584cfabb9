"""Tenants' credentials: API keys, the admin key, and the names tenants and adapters may take."""
