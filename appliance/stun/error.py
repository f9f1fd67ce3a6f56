"""The one exception the STUN codec raises for anything malformed."""


class StunError(ValueError):
    """Bytes that are not a well-formed STUN message, attribute or ChannelData frame."""
