"""Built-in LLMs for reflect: ``openai`` (any OpenAI-compatible chat endpoint)."""
