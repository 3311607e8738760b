"""LocalSpanner's GoogleSQL engine on SQLite.

- ``tokens``: the tokenizer and the tree of bracketed groups that both parsers work on;
- ``values``: Cloud Spanner types and values, between the wire and SQLite storage;
- ``schema``: DDL parsed into a catalog and into SQLite tables and indexes;
- ``translate``: queries and DML rewritten into SQLite, with their result types;
- ``engine``: what the server calls: queries, DML, reads and mutations.
"""
