"""The ResIP exit server: configuration, TLS material, target policy (ACL), endpoint and API.

Only ``server/`` and ``aio/`` may do I/O; ``acl`` is pure so every policy decision can be
unit-tested without sockets or DNS.
"""
