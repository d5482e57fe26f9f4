"""VM specs, templates and libvirt domain XML (no libvirt, no network)."""
