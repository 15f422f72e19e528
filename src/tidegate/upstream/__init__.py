"""The transport to engines and providers: aiohttp towards OpenAI-compatible servers."""
