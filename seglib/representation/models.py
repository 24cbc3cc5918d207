"""The representation models, one entry per `train.model` in `MODEL_KINDS`. Imported on executors, so
it depends on torch alone.

- autoencoder: a symmetric MLP; the bottleneck is the customer embedding (optionally denoising).
- vae: the encoder gives a mean and a log-variance; the embedding is the mean.
- idec: an autoencoder plus learnable cluster centres in the embedding space, fine-tuned with the
  KL self-training loss of Guo et al. (2017) while keeping the reconstruction loss.

With `spec.members` > 1, `build_model` returns an `Ensemble` of that many models of the kind, trained side
by side; its embedding is theirs concatenated and its reconstruction their mean.

A new model kind is a `RepresentationModel` subclass (its `encode` and `training_loss`), one entry in
`MODEL_KINDS` (module, version prefix, training phases) and its name in `seglib.contract.config.ModelKindName`.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from seglib.contract.config import ModelKindName

Phase = Literal["pretrain", "idec"]
Activation = Literal["gelu", "relu", "tanh", "elu"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


@dataclass(frozen=True)
class AutoencoderSpec:
    input_dim: int
    hidden_dims: tuple[int, ...]
    embedding_dim: int
    dropout: float = 0.0
    kind: ModelKindName = "autoencoder"
    activation: Activation = "gelu"
    batch_norm: bool = False
    clusters: int = 0  # idec only: number of cluster centres
    forecast_targets: int = 0  # train.forecast: outputs of the forecast head (0: no head)
    members: int = 1  # train.members: models of this spec trained side by side, embeddings concatenated


def training_row_width(spec: AutoencoderSpec) -> int:
    """Values per training row: the model inputs, and with a forecast head the customer's earlier
    inputs, the window targets and the row's forecast weight (1, or 0 for a customer not seen by the
    cut-off), packed into one array so that every launcher and loader moves a single column."""
    if spec.forecast_targets == 0:
        return spec.input_dim
    return 2 * spec.input_dim + spec.forecast_targets + 1


def _stack(widths: list[int], spec: AutoencoderSpec) -> nn.Sequential:
    """Linear layers; every layer but the last is followed by [batch norm], activation, [dropout]."""
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(width_in, width_out))
        if index < len(widths) - 2:
            if spec.batch_norm:
                layers.append(nn.BatchNorm1d(width_out))
            layers.append(ACTIVATIONS[spec.activation]())
            if spec.dropout > 0:
                layers.append(nn.Dropout(spec.dropout))
    return nn.Sequential(*layers)


class RepresentationModel(nn.Module):
    """An encoder to the embedding and a decoder back; subclasses define the embedding and the loss.

    Every kind keeps the attribute names `encoder` and `decoder` (and `cluster_centers` for idec);
    training, embedding and scoring call `encode` and `decode`, which an `Ensemble` of several models
    of one kind (`spec.members`) also answers, so serialization, embedding and checkpoints are shared."""

    def __init__(self, spec: AutoencoderSpec) -> None:
        super().__init__()
        self.spec = spec
        widths = [spec.input_dim, *spec.hidden_dims, spec.embedding_dim]
        self.encoder = _stack(self.encoder_widths(widths), spec)
        self.decoder = _stack(list(reversed(widths)), spec)
        if spec.forecast_targets > 0:
            hidden = spec.hidden_dims[-1] if spec.hidden_dims else spec.embedding_dim
            self.forecast_head = _stack([spec.embedding_dim, hidden, spec.forecast_targets], spec)

    def encoder_widths(self, widths: list[int]) -> list[int]:
        return widths

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """The embedding of each row."""
        return self.encoder(inputs)  # type: ignore[no-any-return]

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The model inputs reconstructed from embeddings."""
        return self.decoder(embeddings)  # type: ignore[no-any-return]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Reconstruction from the embedding (deterministic, also for a VAE)."""
        return self.decode(self.encode(inputs))

    def training_loss(
        self, inputs: torch.Tensor, corruption: float, vae_beta: float, cluster_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to minimise, reconstruction MSE of the clean inputs) for one batch."""
        corrupted = _mask(inputs, corruption) if corruption > 0 else inputs
        reconstruction = nn.functional.mse_loss(self.decoder(self.encoder(corrupted)), inputs)
        return reconstruction, reconstruction

    def forecast_loss(
        self, earlier: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """Squared error of the window's (standardized, family-weighted) targets predicted from the
        embedding of the customer's earlier inputs, averaged over the rows that have them."""
        predicted = self.forecast_head(self.encode(earlier))
        per_row = (predicted - targets).pow(2).sum(dim=1)
        return (per_row * weights).sum() / weights.sum().clamp_min(1.0)


class Autoencoder(RepresentationModel):
    """The plain (optionally denoising) autoencoder: the bottleneck is the embedding."""


class VariationalAutoencoder(RepresentationModel):
    """The encoder gives a mean and a log-variance per dimension; the embedding is the mean."""

    def encoder_widths(self, widths: list[int]) -> list[int]:
        return [*widths[:-1], 2 * self.spec.embedding_dim]

    def _moments(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_variance = self.encoder(inputs).chunk(2, dim=1)
        return mean, log_variance.clamp(-10.0, 10.0)

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._moments(inputs)[0]

    def training_loss(
        self, inputs: torch.Tensor, corruption: float, vae_beta: float, cluster_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        corrupted = _mask(inputs, corruption) if corruption > 0 else inputs
        mean, log_variance = self._moments(corrupted)
        sample = mean + torch.randn_like(mean) * torch.exp(0.5 * log_variance)
        reconstruction = nn.functional.mse_loss(self.decoder(sample), inputs)
        # KL to N(0, I) per row, on the same per-feature scale as the MSE.
        divergence = (
            -0.5
            * torch.mean(torch.sum(1 + log_variance - mean.pow(2) - log_variance.exp(), dim=1))
            / self.spec.input_dim
        )
        return reconstruction + vae_beta * divergence, reconstruction


class IdecAutoencoder(RepresentationModel):
    """An autoencoder with learnable cluster centres, sharpened by DEC's self-training loss."""

    def __init__(self, spec: AutoencoderSpec) -> None:
        super().__init__(spec)
        if spec.clusters < 2:
            raise ValueError("an idec model needs at least 2 clusters")
        self.cluster_centers = nn.Parameter(torch.zeros(spec.clusters, spec.embedding_dim))

    def soft_assignments(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Student's t kernel between embeddings and cluster centres (DEC's q, one degree of freedom)."""
        squared = torch.cdist(embeddings, self.cluster_centers).pow(2)
        kernel = 1.0 / (1.0 + squared)
        return kernel / kernel.sum(dim=1, keepdim=True)

    def training_loss(
        self, inputs: torch.Tensor, corruption: float, vae_beta: float, cluster_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        corrupted = _mask(inputs, corruption) if corruption > 0 else inputs
        embeddings = self.encoder(corrupted)
        reconstruction = nn.functional.mse_loss(self.decoder(embeddings), inputs)
        if cluster_weight > 0:
            assignments = self.soft_assignments(embeddings)
            target = target_distribution(assignments).detach()
            clustering = nn.functional.kl_div(assignments.log(), target, reduction="batchmean")
            return reconstruction + cluster_weight * clustering, reconstruction
        # The centres take no part before the clustering phase; a zero term keeps their gradient
        # defined so that DDP and Horovod reduce the same parameters in every step.
        return reconstruction + 0.0 * self.cluster_centers.sum(), reconstruction


class Ensemble(RepresentationModel):
    """`spec.members` models of one kind, each initialised from its own random draw and trained on the
    same batches side by side; the embedding is theirs side by side, the reconstruction their mean.

    One training lands in one of many equally good latent spaces, oriented and stretched as its random
    start led it, and k-means cuts a continuum of customers differently in each: segments of two
    retrains disagree. Averaging over members makes the distances between customers less a matter of
    one draw (bench/real_logs.py: agreement between runs with other seeds)."""

    def __init__(self, spec: AutoencoderSpec) -> None:
        nn.Module.__init__(self)
        self.spec = spec
        member = dataclasses.replace(spec, members=1)
        self.members = nn.ModuleList(build_model(member) for _ in range(spec.members))

    def _members(self) -> list[RepresentationModel]:
        return list(self.members)  # type: ignore[arg-type]

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([member.encode(inputs) for member in self._members()], dim=1)

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        parts = embeddings.split(self.spec.embedding_dim, dim=1)
        return torch.stack(
            [member.decode(part) for member, part in zip(self._members(), parts, strict=True)]
        ).mean(0)

    def training_loss(
        self, inputs: torch.Tensor, corruption: float, vae_beta: float, cluster_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        losses = [
            member.training_loss(inputs, corruption, vae_beta, cluster_weight) for member in self._members()
        ]
        return (
            torch.stack([loss for loss, _ in losses]).mean(),
            torch.stack([reconstruction for _, reconstruction in losses]).mean(),
        )

    def forecast_loss(
        self, earlier: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        return torch.stack(
            [member.forecast_loss(earlier, targets, weights) for member in self._members()]
        ).mean()


@dataclass(frozen=True)
class ModelKind:
    """One kind of representation model: its module, the prefix of its version names (ae-20250131-...),
    and its training phases in order ("pretrain": reconstruction with early stopping; "idec":
    clustering-loss fine-tuning from k-means centres)."""

    module_class: type[RepresentationModel]
    version_prefix: str
    phases: tuple[Phase, ...] = ("pretrain",)


MODEL_KINDS: dict[str, ModelKind] = {
    "autoencoder": ModelKind(Autoencoder, "ae"),
    "vae": ModelKind(VariationalAutoencoder, "vae"),
    "idec": ModelKind(IdecAutoencoder, "idec", ("pretrain", "idec")),
}


def build_model(spec: AutoencoderSpec) -> RepresentationModel:
    if spec.members > 1:
        return Ensemble(spec)
    return MODEL_KINDS[spec.kind].module_class(spec)


def next_phase(kind: str, phase: str) -> str:
    """The phase after `phase` for a model kind, "done" after its last."""
    phases = MODEL_KINDS[kind].phases
    position = phases.index(phase) if phase in phases else len(phases)
    return phases[position + 1] if position + 1 < len(phases) else "done"


class TrainingObjective(nn.Module):
    """The training loss as a module's forward, so that DistributedDataParallel (which synchronises
    the gradients of what runs through its own forward) wraps the whole objective."""

    def __init__(self, model: RepresentationModel, forecast_weight: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.forecast_weight = forecast_weight

    def forward(
        self, rows: torch.Tensor, corruption: float, vae_beta: float, cluster_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, reconstruction MSE) of a batch of training rows (see `training_row_width`)."""
        spec = self.model.spec
        if spec.forecast_targets == 0:
            return self.model.training_loss(rows, corruption, vae_beta, cluster_weight)
        inputs, earlier, targets, weights = rows.split(
            [spec.input_dim, spec.input_dim, spec.forecast_targets, 1], dim=1
        )
        loss, reconstruction = self.model.training_loss(inputs, corruption, vae_beta, cluster_weight)
        forecast = self.model.forecast_loss(earlier, targets, weights.squeeze(1))
        return loss + self.forecast_weight * forecast, reconstruction


def encode_and_decode(
    model: RepresentationModel,
    inputs: torch.Tensor,
    bounds: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embeddings, reconstructions, reconstruction errors) of model-input rows, as every scoring path
    computes them: the encoder sees each input clipped to the training range `bounds` (a customer base
    that merely ages lands at the edge of the known space rather than wherever the network
    extrapolates), while the error is measured against the unclipped input, so that a customer far
    outside the range is still flagged novel."""
    clipped = torch.minimum(torch.maximum(inputs, bounds[0]), bounds[1]) if bounds is not None else inputs
    embeddings = model.encode(clipped)
    reconstructions = model.decode(embeddings)
    return embeddings, reconstructions, (reconstructions - inputs).pow(2).mean(dim=1)


def target_distribution(assignments: torch.Tensor) -> torch.Tensor:
    """DEC's auxiliary target: squares the assignments and normalises by cluster frequency, which
    sharpens confident assignments and keeps large clusters from swallowing the others."""
    weight = assignments.pow(2) / assignments.sum(dim=0).clamp_min(1e-12)
    return weight / weight.sum(dim=1, keepdim=True)


def _mask(inputs: torch.Tensor, rate: float) -> torch.Tensor:
    """Masking noise: a share of the (standardised) inputs set to 0, their population mean."""
    keep = torch.rand_like(inputs) >= rate
    return inputs * keep


def serialize(model: RepresentationModel) -> bytes:
    buffer = io.BytesIO()
    torch.save({"spec": asdict(model.spec), "state_dict": model.state_dict()}, buffer)
    return buffer.getvalue()


def spec_from_dict(fields: dict[str, Any]) -> AutoencoderSpec:
    return AutoencoderSpec(**{**fields, "hidden_dims": tuple(fields["hidden_dims"])})


def deserialize(payload: bytes) -> RepresentationModel:
    saved: dict[str, Any] = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    model = build_model(spec_from_dict(dict(saved["spec"])))
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return model
