"""The control socket: JSON-RPC over newline-delimited JSON on a Unix socket,
the method table, and the namespaces that serve it."""
