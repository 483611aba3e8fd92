"""The head-node dashboard: model (pure), page (pure), read-only HTTP server."""
