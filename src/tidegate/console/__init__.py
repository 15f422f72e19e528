"""The web console: a static page and its scripts, served by the gateway at /console.

The page holds no server-side logic of its own: its scripts call the gateway's existing HTTP
API (/admin, /v1/files, /v1/batches, /metrics) with the admin key the user signs in with, so
what an operator or a tenant admin sees is exactly what the API lets that key see.
"""
