"""The post-build tools: they read a finished build and never rewrite a shard (``audit``, ``report``,
``reweight``, ``calibrate``; ``export`` is a folder of its own)."""
