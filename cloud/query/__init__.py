"""The read side: readings page by page, chart buckets, the registries, reports."""
