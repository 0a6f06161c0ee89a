"""``linepairs export OUT DEST --to TARGET``: a finished build as the dataset another trainer reads
(diffusers, kohya sd-scripts, SimpleTuner, ai-toolkit), its weights turned into repeats or rows.

``source`` reads the build (manifest + weight version as arrays, shards streamed once),
``drawings`` picks each sample's drawing and polarity, ``repeats`` turns weights into whole
repeats, ``plan`` decides every sample's fate before a byte is written, ``shards`` writes a shard's
samples, ``dest`` owns DEST's files, ``run`` drives, resumes and reports; one module per target,
sharing ``target``. docs/export.md is the user guide.
"""

from .run import ExportRefused, ExportRequest, ExportSummary, run_export
from .source import ExportError
from .target import MODULES as TARGETS

__all__ = ["TARGETS", "ExportError", "ExportRefused", "ExportRequest", "ExportSummary", "run_export"]
