"""Avro schemas (one .avsc per record type) and the codec that tags every message with its writer schema."""

from schemas.codec import CODEC, Codec, DecodeError

__all__ = ["CODEC", "Codec", "DecodeError"]
