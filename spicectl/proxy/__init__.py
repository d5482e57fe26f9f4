"""Per-session and long-running proxies: WebSocket (spice-html5) and HTTP CONNECT (remote-viewer)."""
