"""Compatibility with the PHP prototype's protocol v1 (docs/PROTOCOL.md §9), kept apart from v2.

Invariant: the dependency runs one way. These modules reuse v2's value types (the
:class:`~resip.core.wire.Record` and command dataclasses) and its generic packed-integer
helpers, but own every v1 parser and encoder, so the v2 codec (:mod:`resip.core.wire`,
:mod:`resip.core.crypto`) never learns that v1 exists and a change to v2's encodings
cannot alter a v1 byte (``tests/data/seed-vectors.json`` checks them byte for byte).

- :mod:`resip.compat.legacy_v1_wire`: v1 records and command messages.
- :mod:`resip.compat.legacy_v1`: v1 packets (encryption, HMAC, fragmentation, DEFLATE).
"""
