"""Who may do what: gateway tokens, users and API keys, rate limits."""
