"""Pure-ASGI middleware, one concern per module (no ``BaseHTTPMiddleware``: it buffers and costs)."""
