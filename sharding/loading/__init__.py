"""The training loader in stages, the webdataset way; ``sharding.loader`` puts them together.

population (``population``: the manifest and a weight version as arrays) -> sampler (``sampler``:
batch ``j`` as manifest rows; ``extractors``: which line drawing each row brings) -> reader
(``reader``: members by offset) -> decode (``decode``: bytes to arrays, in threads) -> batch
(``batch``: one bucket-pure ``Batch``). ``stream`` drives them (options, ranks, workers, resume);
``lookup`` is random access by key. Each stage takes the one before it as plain data, so a caller
may stop at any of them (``audit`` stops at the sampler).
"""
