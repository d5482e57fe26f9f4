"""libvirt: connections (including spicectl's private embedded default), lifecycle, tickets, host."""
