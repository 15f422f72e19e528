"""tidegate: production LLM serving behind one OpenAI-compatible endpoint."""

__version__ = "0.1.0"
