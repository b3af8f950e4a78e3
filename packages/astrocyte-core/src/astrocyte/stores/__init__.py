"""Built-in stores: ``memory``, ``sqlite`` (the embedded default) and ``postgres``."""
