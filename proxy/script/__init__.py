"""Routing scripts: the request context and its verbs, the loader, the default script."""
