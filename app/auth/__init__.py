"""Who is calling: admin sign-in (argon2 + JWT), end-user API keys, roles and the IP allowlist."""
