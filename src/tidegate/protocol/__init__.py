"""OpenAI wire types and SSE framing. No I/O, no tidegate services."""
