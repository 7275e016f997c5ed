"""Background work in PostgreSQL: the job queue and the notifications it delivers."""
