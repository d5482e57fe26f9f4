"""Guest OS images: recipes (data in images/), building them with mmdebstrap, the cache of built images."""
