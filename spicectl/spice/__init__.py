"""Our own SPICE client: wire structures, link stage, channels, codecs.

`from spicectl.spice import Client` gives the asyncio client; it is loaded on
first use so that importing the link code alone stays light.
"""


def __getattr__(name: str):
    if name in ("Client", "tls_context"):
        from spicectl.spice import client

        return getattr(client, name)
    raise AttributeError(name)
