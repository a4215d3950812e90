"""Code shared by every Roomcast service: settings, logging, metrics, tokens, errors."""
