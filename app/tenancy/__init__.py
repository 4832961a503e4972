"""Tenants, their end users and the API keys those users call with."""
