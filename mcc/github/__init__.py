"""GitHub: the REST client and its authentication, webhook verification and event handlers, and the
mapping of GitHub objects onto MCC's records (shared by webhooks and the full sync).

See docs/github.md for setup and the decisions behind it.
"""
