"""Who may call: tenants, API keys, principals, admin actors and the audit log."""
