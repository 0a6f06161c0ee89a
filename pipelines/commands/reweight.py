"""``linepairs reweight OUT [--config weights.toml] [--name NAME] [--activate]``."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from .storage import add_out_argument, open_out


def add_parser(sub) -> None:
    p = sub.add_parser(
        "reweight",
        help="solve a new weight version of a finished build from its manifest (no shard rewritten)",
        description="Solve sample weights for a finished build from manifest.parquet alone and store them "
        "as OUT/weights/NAME.parquet; shards are never opened or rewritten. Without --config: the build's "
        "own [weights]. With an existing --name and no --config: just activate that version.",
    )
    add_out_argument(p)
    p.add_argument(
        "--config", help="a TOML file whose [weights] is the new policy (other sections must match)"
    )
    p.add_argument("--name", help="version name (default: the next free vN)")
    p.add_argument("--activate", action="store_true", help="make this version the one readers use by default")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from curation.weighting import WeightError
    from sharding.layout import StorageError
    from sharding.weights import WeightsVersionError

    from ..config import ConfigError
    from ..tools.reweight import ReweightRefused, reweight, weights_from_toml

    try:
        layout = open_out(args.out, args)
        cfg = weights_from_toml(args.config, layout) if args.config else None
        result = reweight(layout, cfg, name=args.name, activate_it=args.activate)
    except (ConfigError, ReweightRefused, WeightsVersionError, StorageError) as exc:
        raise UsageError(str(exc)) from None
    except WeightError as exc:
        raise UsageError(f"the weights cannot be met by this build's samples: {exc}") from None
    print("\n".join(result.lines()))
    return 0
