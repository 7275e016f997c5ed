"""Schema migrations, applied in file-name order by cloud.db.migrate."""
