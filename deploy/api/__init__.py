"""Shared API plumbing below every app: errors, roles and authentication, request
parsing and the database-vendor helpers. Imports no app (docs/architecture.md, layers)."""
