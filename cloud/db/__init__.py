"""PostgreSQL access: schema migrations and the connection pool."""
