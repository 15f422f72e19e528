"""The transport to engines and providers: one exchange (``exchange``) with an OpenAI-compatible
(``client``) and an Anthropic (``anthropic``) provider, over aiohttp; nothing above this package
sees an aiohttp type on the request path."""
