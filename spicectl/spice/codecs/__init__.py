"""Image codecs of the SPICE display channel (our own implementations)."""
