"""The ``glimpse`` command line: one module per group of commands, ``main`` dispatches."""
