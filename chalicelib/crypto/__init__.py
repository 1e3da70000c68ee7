"""Envelope encryption with KMS data keys (:mod:`chalicelib.crypto.envelope`)."""
