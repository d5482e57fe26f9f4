"""spicectl: SPICE virtual machines end to end (CA, domain XML, guests, sessions)."""

__version__ = "0.1.0"
