"""Curation: source readers, the record type, safe decoding and the scan of one record."""

from .decode import Decoded, DecodeReject, decode_image
from .records import REJECT_REASONS, TAG_CATEGORIES, Record, sample_key

__all__ = [
    "REJECT_REASONS",
    "TAG_CATEGORIES",
    "DecodeReject",
    "Decoded",
    "Record",
    "decode_image",
    "sample_key",
]
