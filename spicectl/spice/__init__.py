"""Our own SPICE client: wire structures, link stage, channels, codecs."""
