"""Operator tools: the admin API, admin accounts, the audit log and the dashboard."""
