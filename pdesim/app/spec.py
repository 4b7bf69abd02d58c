"""``RunSpec``: everything a ``pdesim run`` needs besides the PDE configuration, validated on creation.

It round-trips through the ``[run]`` and ``[pde]`` tables of a run directory's config.toml, so
``pdesim run --config RUN/config.toml`` repeats a run exactly. Its fields are checked by the
validators of ``pdesim.config`` (one rule per kind of value); the preset it names is checked by
``pdesim.app.presets`` when the run starts, because presets are built on top of this spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import solvers

from ..config import ConfigError, PDEConfig, check_bool, check_choice, check_int, check_positive

# The runs' embeddings are larger than the LayerNorm scale (token norm ≈ 8√d): pre-LN updates
# then move the stream slowly (it keeps its input), while without LayerNorm the terms act on the
# full-size state and the norm grows exponentially — the contrast the default run is made to show.
RUN_EMBED_SCALE = 8.0


@dataclass
class RunSpec:
    """A run: the PDE, the preset, the solver and its grid, the Transformer's depth, the batch."""

    pde: PDEConfig = field(default_factory=lambda: PDEConfig(embed_scale=RUN_EMBED_SCALE))
    preset: str = "standard"
    solver: str = "rk4"
    dt: float | None = 0.05
    t_end: float = 8.0
    saves: int = 41
    layers: int = 16
    batch: int = 2
    rtol: float | None = None
    atol: float | None = None
    blowup: float = 1e6
    baseline: bool = True
    compile: bool = False  # torch.compile each fixed step (solvers.solve(compile=...))

    def __post_init__(self) -> None:
        if not isinstance(self.pde, PDEConfig):
            raise ConfigError(f"pde={self.pde!r} must be a PDEConfig")
        if not isinstance(self.preset, str):
            raise ConfigError(f"preset={self.preset!r} must be a preset name")
        check_choice("solver", self.solver, solvers.METHODS)
        if self.dt is None and self.solver in solvers.FIXED_METHODS:
            raise ConfigError(f"dt=None: the fixed-step solver {self.solver!r} needs a step dt > 0")
        if self.dt is not None:
            self.dt = check_positive("dt", self.dt)
        self.t_end = check_positive("t_end", self.t_end)
        self.blowup = check_positive("blowup", self.blowup)
        check_int("saves", self.saves, 2)
        check_int("layers", self.layers, 1)
        check_int("batch", self.batch, 1)
        for name in ("rtol", "atol"):
            if getattr(self, name) is not None:
                setattr(self, name, check_positive(name, getattr(self, name)))
                if self.solver in solvers.FIXED_METHODS:
                    raise ConfigError(
                        f"{name}={getattr(self, name):g} is a tolerance of adaptive solvers; the fixed-step solver "
                        f"{self.solver!r} has none (give dt, or an adaptive solver such as dopri5)"
                    )
        check_bool("baseline", self.baseline)
        check_bool("compile", self.compile)

    def to_tables(self) -> dict[str, dict[str, Any]]:
        run = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "pde"}
        return {"run": run, "pde": self.pde.to_dict()}

    @classmethod
    def from_tables(cls, tables: dict[str, Any]) -> RunSpec:
        """The spec of a config file's [run] and [pde] tables, every value checked like the flags."""
        unknown = sorted(set(tables) - {"run", "pde"})
        if unknown:
            raise ConfigError(f"unknown table [{unknown[0]}] in the config; expected [run] and [pde]")
        for name in ("run", "pde"):
            if not isinstance(tables.get(name, {}), dict):
                raise ConfigError(f"{name} = {tables[name]!r} in the config must be a table [{name}] of settings")
        run = dict(tables.get("run", {}))
        names = {f.name for f in fields(cls)} - {"pde"}
        bad = sorted(set(run) - names)
        if bad:
            raise ConfigError(f"unknown key {bad[0]!r} in [run]; expected one of {', '.join(sorted(names))}")
        solver = check_choice("solver", run.get("solver", cls.solver), solvers.METHODS)
        if run.get("dt") is not None and solver not in solvers.FIXED_METHODS:
            raise ConfigError(f"[run] dt={run['dt']!r} applies to fixed-step solvers; {solver!r} is adaptive "
                              "(it picks its own steps: give rtol/atol)")
        pde = cls().pde.replace(**tables.get("pde", {}))  # a partial [pde] table changes the run's defaults
        return cls(pde=pde, **run)

