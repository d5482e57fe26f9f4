"""Xspice: an X display served over SPICE with no VM (Xorg with the spiceqxl driver).

`config` writes the X server's configuration and environment from a spec
(sans-I/O); `displays` starts, finds and stops the X servers spicectl runs and
says how a client reaches one.
"""
