"""The autoencoder. Imported on executors, so it depends on torch alone."""

from __future__ import annotations

import io
import itertools
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class AutoencoderSpec:
    input_dim: int
    hidden_dims: tuple[int, ...]
    embedding_dim: int
    dropout: float = 0.0


def _stack(widths: list[int], dropout: float, final_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(width_in, width_out))
        is_last = index == len(widths) - 2
        if not is_last or final_activation:
            layers.append(nn.GELU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """A symmetric MLP autoencoder; the bottleneck is the customer embedding."""

    def __init__(self, spec: AutoencoderSpec) -> None:
        super().__init__()
        self.spec = spec
        widths = [spec.input_dim, *spec.hidden_dims, spec.embedding_dim]
        self.encoder = _stack(widths, spec.dropout, final_activation=False)
        self.decoder = _stack(list(reversed(widths)), spec.dropout, final_activation=False)

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.encoder(inputs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(inputs))


def serialize(model: Autoencoder) -> bytes:
    buffer = io.BytesIO()
    torch.save({"spec": asdict(model.spec), "state_dict": model.state_dict()}, buffer)
    return buffer.getvalue()


def deserialize(payload: bytes) -> Autoencoder:
    saved: dict[str, Any] = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    spec_fields = dict(saved["spec"])
    spec_fields["hidden_dims"] = tuple(spec_fields["hidden_dims"])
    model = Autoencoder(AutoencoderSpec(**spec_fields))
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return model
