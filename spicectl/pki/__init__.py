"""Certificate authority and certificates for SPICE TLS (no network, no libvirt)."""
