"""Subscribers, domains and aliases: the SQL store, its live reload in the proxy, and their CLI."""
