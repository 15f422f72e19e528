"""The gateway pipeline's logic: keys, tenants, limits, validation. No HTTP framework imports."""
