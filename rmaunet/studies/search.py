"""Searches: Ray Tune + Optuna (TPE, seeded) + ASHA over any TrialConfig field.

A spec's `space:` maps config fields (or `loss_params.<name>`) to one distribution:

    loss_params.alpha: {uniform: [0, 1]}
    learning_rate:     {loguniform: [1.0e-4, 3.0e-3]}
    depth:             {int: [3, 5]}
    attention:         {choice: [none, se, cbam, mha]}

Every sampled trial is a training with its own identity, so a configuration the search
meets twice (or that a table already trained) is replayed from the store, not retrained.
The threshold is post-processing: the objective a trial ends with is validation F1 at
its sampled threshold, computed from the stored probability maps.
"""

from __future__ import annotations

import math
from typing import Any

from rmaunet.config import TrialConfig
from rmaunet.errors import ConfigError

__all__ = ["parse_space", "apply_params", "check_loss_params", "optuna_distributions", "grid_points", "DISTRIBUTIONS"]

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")


def parse_space(space: dict[str, Any], base: TrialConfig) -> dict[str, tuple[str, list[Any]]]:
    """Validate a `space:` mapping -> {name: (kind, args)}; ConfigError names the bad entry."""
    fields = set(TrialConfig.field_names())
    parsed: dict[str, tuple[str, list[Any]]] = {}
    for name, dist in space.items():
        root = name.split(".", 1)[0]
        if root not in fields or (root == "loss_params") != ("." in name):
            raise ConfigError(f"space: unknown parameter {name!r} (a config field, or loss_params.<name>)")
        if not isinstance(dist, dict) or len(dist) != 1:
            raise ConfigError(f"space.{name}: expected one of {{{', '.join(DISTRIBUTIONS)}: …}}")
        (kind, args), = dist.items()
        if kind not in DISTRIBUTIONS:
            raise ConfigError(f"space.{name}: unknown distribution {kind!r} (choose one of: {', '.join(DISTRIBUTIONS)})")
        if not isinstance(args, list) or not args:
            raise ConfigError(f"space.{name}: {kind} needs a list of values")
        if kind != "choice":
            if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
                raise ConfigError(f"space.{name}: {kind} needs [low, high]")
            low, high = args
            if not low < high or (kind == "loguniform" and low <= 0):
                raise ConfigError(f"space.{name}: {kind} bounds {args} are not a valid range")
            if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
                raise ConfigError(f"space.{name}: int bounds must be integers")
            probes = [low, high]
        else:
            probes = list(args)
        for value in probes:  # every end of the range must make a valid config
            try:
                apply_params(base, {name: int(value) if kind == "int" else value})
            except ConfigError as exc:
                raise ConfigError(f"space.{name}: {exc}") from None
        parsed[name] = (kind, list(args))
    return parsed


def apply_params(base: TrialConfig, params: dict[str, Any]) -> TrialConfig:
    """Sampled values -> a config; `loss_params.x` merges into the base's loss_params."""
    changes: dict[str, Any] = {}
    loss_params = dict(base.loss_params)
    for name, value in params.items():
        if name.startswith("loss_params."):
            loss_params[name.split(".", 1)[1]] = value
        else:
            changes[name] = value
    if loss_params != dict(base.loss_params):
        changes["loss_params"] = loss_params
    from rmaunet.data.bands import resolve_bands

    config = base.replace(**changes)
    resolve_bands(config.bands, config.dataset)
    check_loss_params(config)
    return config


def check_loss_params(config: TrialConfig) -> None:
    """Refuse loss parameters the named loss does not take (before any trial starts).

    Building the loss is the only complete check (each loss validates its own ranges); it
    imports Keras, so it runs only when there are parameters to check.
    """
    if config.loss_params:
        from rmaunet import losses

        losses.get(config.loss, **config.loss_kwargs)


def optuna_distributions(parsed: dict[str, tuple[str, list[Any]]]) -> dict[str, Any]:
    from optuna import distributions as d

    out: dict[str, Any] = {}
    for name, (kind, args) in parsed.items():
        if kind == "uniform":
            out[name] = d.FloatDistribution(float(args[0]), float(args[1]))
        elif kind == "loguniform":
            out[name] = d.FloatDistribution(float(args[0]), float(args[1]), log=True)
        elif kind == "int":
            out[name] = d.IntDistribution(int(args[0]), int(args[1]))
        else:
            out[name] = d.CategoricalDistribution(args)
    return out


def grid_points(parsed: dict[str, tuple[str, list[Any]]], per_axis: int = 3) -> list[dict[str, Any]]:
    """An exhaustive grid over the space (continuous axes at `per_axis` points)."""
    import itertools

    axes: dict[str, list[Any]] = {}
    for name, (kind, args) in parsed.items():
        if kind == "choice":
            axes[name] = list(args)
        elif kind == "int":
            axes[name] = list(range(int(args[0]), int(args[1]) + 1))
        elif kind == "loguniform":
            lo, hi = math.log(args[0]), math.log(args[1])
            axes[name] = [math.exp(lo + (hi - lo) * i / (per_axis - 1)) for i in range(per_axis)]
        else:
            axes[name] = [args[0] + (args[1] - args[0]) * i / (per_axis - 1) for i in range(per_axis)]
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]


def describe(params: dict[str, Any]) -> str:
    """A row label for a sampled configuration."""
    parts = []
    for name, value in sorted(params.items()):
        short = name.removeprefix("loss_params.")
        parts.append(f"{short}={value:.3g}" if isinstance(value, float) else f"{short}={value}")
    return ", ".join(parts)
