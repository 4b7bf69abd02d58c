"""Saving and loading pdesim's models: a TOML description and the weights in safetensors, no pickle.

``save(model, directory)`` writes ``model.toml`` (what to build: the kind, every PDEConfig, the
layer sequence, the diffusion layers and their sizes) and ``model.safetensors`` (every parameter
and buffer by its state_dict name, each tied tensor once). ``load(directory)`` builds the same
modules from the description and fills them from the safetensors file, strictly: a missing or
extra tensor is an error, so a loaded model is the saved one bit for bit. Kinds: ``MasterPDE``,
``LayeredPDE``, ``Transformer``, ``Classifier`` and ``PDEClassifier``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import tomli_w
from safetensors.torch import load_model, save_model
from torch import nn

from .classifier import Classifier, PDEClassifier
from .config import ConfigError, PDEConfig
from .diffusion_layer import PDEDiffusion
from .model import MasterPDE
from .transformer import LayeredPDE, Transformer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FORMAT, VERSION = "pdesim-model", 1
DESCRIPTION, WEIGHTS = "model.toml", "model.safetensors"

Saveable = MasterPDE | LayeredPDE | Transformer | Classifier


# -- describing ------------------------------------------------------------------------------------
def _diffusion_layer(layer: nn.Module) -> dict[str, Any]:
    if not isinstance(layer, PDEDiffusion):
        raise ConfigError(f"cannot save a diffusion layer of type {type(layer).__name__}; pdesim saves PDEDiffusion")
    return {
        "dim": layer.dim, "scales": list(layer.scales), "tau_max": layer.tau_max,
        "per_channel": layer.per_channel, "causal": layer.causal,
    }


def _pde(pde: MasterPDE) -> dict[str, Any]:
    return {
        "config": pde.cfg.to_dict(),
        "inserts": {name: _diffusion_layer(layer) for name, layer in pde.inserts.items()},
    }


def _sequence(pdes: list[MasterPDE]) -> tuple[list[dict[str, Any]], list[int]]:
    """Each distinct PDE once, and for every layer the index of its PDE (tied layers share one)."""
    index: dict[int, int] = {}
    distinct: list[MasterPDE] = []
    for pde in pdes:
        if id(pde) not in index:
            index[id(pde)] = len(distinct)
            distinct.append(pde)
    return [_pde(pde) for pde in distinct], [index[id(pde)] for pde in pdes]


def describe(model: Saveable) -> dict[str, Any]:
    """What ``load`` needs to build ``model`` again, as plain TOML values."""
    head: dict[str, Any] = {"format": FORMAT, "version": VERSION, "kind": type(model).__name__}
    if isinstance(model, Classifier):
        return head | _classifier(model)
    if isinstance(model, MasterPDE):
        return head | _pde(model)
    if isinstance(model, LayeredPDE):
        pdes, sequence = _sequence(list(model._sequence))
        return head | {"t_end": model.t_end, "sequence": sequence, "pdes": pdes}
    if isinstance(model, Transformer):
        pdes, sequence = _sequence([block.pde for block in model.blocks])
        return head | {
            "t_end": model.t_end, "order": model.order, "substep": model.substep, "sequence": sequence,
            "pdes": pdes, "inserts": {name: _diffusion_layer(layer) for name, layer in model.inserts.items()},
        }
    raise ConfigError(
        f"cannot save a {type(model).__name__}; pdesim saves MasterPDE, LayeredPDE, Transformer and Classifier"
    )


def _classifier(model: Classifier) -> dict[str, Any]:
    """The constructor arguments of a Classifier, read back from the modules it built."""
    blocks = model.blocks
    first = blocks.pdes[0]
    layers_with_scales = [*first.inserts.values(), *blocks.inserts.values()]
    data: dict[str, Any] = {
        "config": model.cfg.to_dict(),
        "vocab_size": model.embed.num_embeddings,
        "num_classes": model.head.out_features,
        "layers": blocks.layers,
        "t_end": blocks.t_end,
        "pooling": model.pooling,
        "per_layer": len(blocks.pdes) > 1,
        "order": blocks.order,
        "diffusion_at": [*first.inserts, *blocks.inserts],
        "diffusion_scales": list(layers_with_scales[0].scales) if layers_with_scales else [1],
    }
    if model.pad_id is not None:  # TOML has no null: an absent pad_id is None
        data["pad_id"] = model.pad_id
    if isinstance(model, PDEClassifier):
        data |= {"solver": model.solver, "dt": model.dt, "adjoint": model.adjoint}
    return data


# -- building --------------------------------------------------------------------------------------
def _build_pde(data: dict[str, Any], device: str | None) -> MasterPDE:
    config = dict(data["config"])
    if device is not None:
        config["device"] = device
    pde = MasterPDE(PDEConfig.from_dict(config))
    inserts = {}
    for name, spec in data.get("inserts", {}).items():
        layer = PDEDiffusion(**spec)
        inserts[name] = layer.to(device=pde.cfg.device, dtype=pde.cfg.torch_dtype)
    if inserts:
        pde.add_inserts(inserts)
    return pde


def _build_sequence(data: dict[str, Any], device: str | None) -> list[MasterPDE]:
    pdes = [_build_pde(pde, device) for pde in data["pdes"]]
    return [pdes[index] for index in data["sequence"]]


def build(data: dict[str, Any], device: str | None = None) -> Saveable:
    """The model a ``describe`` dictionary describes, with freshly drawn weights."""
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise ConfigError(f"not a {FORMAT} description of version {VERSION} (format={data.get('format')!r})")
    kind = data.get("kind")
    if kind == "MasterPDE":
        return _build_pde(data, device)
    if kind == "LayeredPDE":
        return LayeredPDE(_build_sequence(data, device), data["t_end"])
    if kind == "Transformer":
        sequence = _build_sequence(data, device)
        cfg = sequence[0].cfg
        outer = {name: PDEDiffusion(**spec).to(device=cfg.device, dtype=cfg.torch_dtype)
                 for name, spec in data.get("inserts", {}).items()}
        return Transformer(sequence, data["t_end"], order=data["order"], substep=data["substep"], inserts=outer)
    if kind in ("Classifier", "PDEClassifier"):
        config = dict(data["config"])
        if device is not None:
            config["device"] = device
        arguments = {key: data[key] for key in ("vocab_size", "num_classes", "pooling", "order")}
        arguments |= {"pad_id": data.get("pad_id"), "diffusion_at": data["diffusion_at"],
                      "diffusion_scales": tuple(data["diffusion_scales"])}
        if kind == "PDEClassifier":
            extra = {key: data[key] for key in ("solver", "dt", "adjoint")}
            return PDEClassifier(PDEConfig.from_dict(config), layers=data["layers"], t_end=data["t_end"],
                                 **extra, **arguments)
        return Classifier(PDEConfig.from_dict(config), layers=data["layers"], t_end=data["t_end"],
                          per_layer=data["per_layer"], **arguments)
    raise ConfigError(f"unknown model kind {kind!r} in the description")


# -- files -----------------------------------------------------------------------------------------
def save(model: Saveable, directory: str | Path) -> Path:
    """Writes ``model.toml`` and ``model.safetensors`` into ``directory`` (made if missing); returns it."""
    description = describe(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DESCRIPTION).write_text(tomli_w.dumps(description))
    save_model(model, str(directory / WEIGHTS), metadata={"format": FORMAT, "kind": description["kind"]})
    return directory


def load(directory: str | Path, *, device: str | None = None) -> Saveable:
    """The model saved in ``directory`` by ``save``, bit for bit; ``device`` overrides the saved one."""
    directory = Path(directory)
    path = directory / DESCRIPTION
    if not path.is_file():
        raise ConfigError(f"{directory}: no {DESCRIPTION}; not a saved pdesim model")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read as TOML ({error})") from None
    model = build(data, device)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise ConfigError(f"{directory}: no {WEIGHTS}")
    target = device if device is not None else _device_of(model)
    try:
        load_model(model, str(weights), strict=True, device=target)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ConfigError(f"{weights}: the weights do not fit the description ({first})") from None
    return model


def _device_of(model: nn.Module) -> str:
    for tensor in [*model.parameters(), *model.buffers()]:
        return str(tensor.device)
    return "cpu"
