"""Search: the query language and ranking the library against a query."""
