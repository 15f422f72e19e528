"""HTTP only: routes, error responses and SSE framing over the gateway's logic."""
