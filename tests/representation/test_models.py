"""Executor-side code, tested in process without Spark."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from seglib.numerics.local_kmeans import best_local_kmeans, squared_distances
from seglib.representation.embedding import encode_batches
from seglib.representation.models import (
    AutoencoderSpec,
    TrainingObjective,
    build_model,
    deserialize,
    serialize,
    target_distribution,
    training_row_width,
)
from seglib.representation.rank_loop import is_improvement


def test_autoencoder_shapes_follow_the_spec():
    model = build_model(AutoencoderSpec(input_dim=12, hidden_dims=(16, 8), embedding_dim=3))
    inputs = torch.randn(5, 12)
    assert model.encode(inputs).shape == (5, 3)
    assert model(inputs).shape == (5, 12)


def test_serialized_model_round_trips_to_identical_outputs():
    torch.manual_seed(0)
    model = build_model(AutoencoderSpec(input_dim=6, hidden_dims=(4,), embedding_dim=2, dropout=0.1)).eval()
    restored = deserialize(serialize(model))
    inputs = torch.randn(7, 6)
    assert restored.spec == model.spec
    assert torch.equal(restored.encode(inputs), model.encode(inputs))


def test_encode_batches_embeds_each_arrow_batch_and_measures_its_reconstruction_error():
    torch.manual_seed(1)
    model = build_model(AutoencoderSpec(input_dim=4, hidden_dims=(8,), embedding_dim=2)).eval()
    rows = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    batches = [pd.Series(list(rows[:3])), pd.Series([], dtype=object), pd.Series(list(rows[3:]))]
    outputs = list(encode_batches(serialize(model), None, iter(batches)))
    assert [len(batch) for batch in outputs] == [3, 0, 2]
    embedded = np.stack([*outputs[0]["embedding"], *outputs[2]["embedding"]])
    errors = np.concatenate([outputs[0]["reconstruction_error"], outputs[2]["reconstruction_error"]])
    decoded = np.stack([*outputs[0]["reconstruction"], *outputs[2]["reconstruction"]])
    with torch.no_grad():
        expected = model.encode(torch.from_numpy(rows)).numpy()
        reconstructed = model(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(embedded, expected, rtol=1e-6)
    np.testing.assert_allclose(decoded, reconstructed, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(errors, ((reconstructed - rows) ** 2).mean(axis=1), rtol=1e-5)


def test_the_reconstruction_space_does_not_depend_on_how_a_training_oriented_its_latent_space():
    """Two trainings can end with the same function in different latent coordinates: here the second
    model's embedding is the first's under an invertible linear map (stretch and shear), undone by its
    decoder. k-means in the embedding then sees other distances and splits the customers otherwise; in
    the reconstruction (cluster.space's default) the two models are the same points."""
    torch.manual_seed(3)
    first = build_model(AutoencoderSpec(input_dim=4, hidden_dims=(8,), embedding_dim=2)).eval()
    second = deserialize(serialize(first))
    remap = torch.tensor([[6.0, 0.0], [5.0, 0.3]])
    with torch.no_grad():
        last_encoder, first_decoder = second.encoder[-1], second.decoder[0]
        last_encoder.weight.copy_(remap @ last_encoder.weight)
        last_encoder.bias.copy_(remap @ last_encoder.bias)
        first_decoder.weight.copy_(first_decoder.weight @ torch.linalg.inv(remap))
    rows = np.random.default_rng(4).normal(size=(300, 4)).astype(np.float32)
    outputs = [
        next(encode_batches(serialize(model), None, iter([pd.Series(list(rows))])))
        for model in (first, second)
    ]
    embeddings = [np.stack(out["embedding"]).astype(np.float64) for out in outputs]
    reconstructions = [np.stack(out["reconstruction"]).astype(np.float64) for out in outputs]
    np.testing.assert_allclose(reconstructions[0], reconstructions[1], rtol=1e-3, atol=1e-4)
    assert not np.allclose(embeddings[0], embeddings[1], atol=1e-2)

    def two_means(points: np.ndarray) -> np.ndarray:
        centers = best_local_kmeans(points, 2, 1, 5, 100)
        return squared_distances(points, centers).argmin(axis=1)

    assert adjusted_rand_score(two_means(reconstructions[0]), two_means(reconstructions[1])) == 1.0
    assert adjusted_rand_score(two_means(embeddings[0]), two_means(embeddings[1])) < 0.9


def test_inputs_outside_the_training_range_are_encoded_clipped_and_their_error_is_measured_unclipped():
    """An ageing customer (an input beyond anything trained on) is embedded at the edge of the range; the
    reconstruction error still compares against the true input, so a far-out customer stays novel."""
    torch.manual_seed(2)
    model = build_model(AutoencoderSpec(input_dim=3, hidden_dims=(6,), embedding_dim=2)).eval()
    bounds = ([-1.0, -2.0, 0.0], [1.0, 2.0, 1.0])
    rows = np.array([[0.5, 9.0, 0.5], [0.5, 2.0, 0.5], [-30.0, 0.0, 1.0], [-1.0, 0.0, 1.0]], dtype=np.float32)
    (out,) = encode_batches(serialize(model), bounds, iter([pd.Series(list(rows))]))
    embedded = np.stack(out["embedding"])
    np.testing.assert_allclose(embedded[0], embedded[1], rtol=1e-6)  # 9.0 is clipped to 2.0
    np.testing.assert_allclose(embedded[2], embedded[3], rtol=1e-6)  # -30.0 is clipped to -1.0
    with torch.no_grad():
        edge = model(torch.from_numpy(rows[[1, 3]])).numpy()
    errors = out["reconstruction_error"].to_numpy()
    np.testing.assert_allclose(errors[[0, 2]], ((edge - rows[[0, 2]]) ** 2).mean(axis=1), rtol=1e-5)
    assert errors[2] > 100 * errors[3]
    # Without a range (models trained before it was saved) the inputs are encoded as they are.
    (unclipped,) = encode_batches(serialize(model), None, iter([pd.Series(list(rows))]))
    assert not np.allclose(np.stack(unclipped["embedding"])[0], embedded[1])


@pytest.mark.parametrize("kind", ["autoencoder", "vae"])
def test_an_ensemble_embeds_with_its_members_side_by_side_and_reconstructs_with_their_mean(kind):
    torch.manual_seed(5)
    spec = AutoencoderSpec(
        input_dim=6, hidden_dims=(8,), embedding_dim=2, kind=kind, members=3, forecast_targets=2
    )
    model = build_model(spec).eval()
    members = list(model.members)
    assert len(members) == 3 and all(member.spec.members == 1 for member in members)
    # Each member starts from its own random draw.
    first_layers = [member.encoder[0].weight for member in members]
    assert not torch.allclose(first_layers[0], first_layers[1]) and not torch.allclose(
        first_layers[1], first_layers[2]
    )
    inputs = torch.randn(7, 6)
    with torch.no_grad():
        embedding = model.encode(inputs)
        assert embedding.shape == (7, 6)
        torch.testing.assert_close(embedding[:, 2:4], members[1].encode(inputs))
        expected = torch.stack([member(inputs) for member in members]).mean(0)
        torch.testing.assert_close(model(inputs), expected)
        torch.testing.assert_close(model.decode(embedding), expected)
    # Training: the mean of the members' losses (clean inputs: no masking, no sampling noise here).
    model.train()
    loss, reconstruction = model.training_loss(inputs, 0.0, 0.0, 0.0)
    member_losses = [member.training_loss(inputs, 0.0, 0.0, 0.0) for member in members]
    if kind == "autoencoder":
        torch.testing.assert_close(loss, torch.stack([value for value, _ in member_losses]).mean())
        torch.testing.assert_close(reconstruction, torch.stack([value for _, value in member_losses]).mean())
    earlier, targets, weights = torch.randn(7, 6), torch.randn(7, 2), torch.ones(7)
    torch.testing.assert_close(
        model.forecast_loss(earlier, targets, weights),
        torch.stack([member.forecast_loss(earlier, targets, weights) for member in members]).mean(),
    )
    copy = deserialize(serialize(model))
    with torch.no_grad():
        torch.testing.assert_close(copy.encode(inputs), model.eval().encode(inputs))
        torch.testing.assert_close(copy(inputs), model(inputs))


def test_members_auto_trains_four_autoencoders_and_one_idec_which_refuses_more():
    from seglib.contract.config import load_config
    from seglib.contract.errors import ConfigError
    from seglib.representation.stage import model_members, plan_training

    assert model_members(load_config(None, []).train) == 4
    assert model_members(load_config(None, ["train.model=idec", "cluster.k=4"]).train) == 1
    assert model_members(load_config(None, ["train.members=2"]).train) == 2
    assert plan_training(load_config(None, []), input_dim=10, rows=1_000).spec.members == 4
    with pytest.raises(ConfigError, match=r"train.members is 3, but idec .* set train.members to 1 or auto"):
        load_config(None, ["train.model=idec", "cluster.k=4", "train.members=3"])


def test_layers_follow_activation_batch_norm_and_dropout_settings():
    spec = AutoencoderSpec(
        input_dim=6, hidden_dims=(5, 4), embedding_dim=2, dropout=0.2, activation="tanh", batch_norm=True
    )
    encoder_kinds = [type(layer).__name__ for layer in build_model(spec).encoder]
    assert encoder_kinds == [
        "Linear",
        "BatchNorm1d",
        "Tanh",
        "Dropout",
        "Linear",
        "BatchNorm1d",
        "Tanh",
        "Dropout",
        "Linear",
    ]


@pytest.mark.parametrize("kind", ["vae", "idec"])
def test_variants_round_trip_and_embed_deterministically(kind):
    torch.manual_seed(2)
    spec = AutoencoderSpec(
        input_dim=6, hidden_dims=(5,), embedding_dim=3, kind=kind, clusters=3 if kind == "idec" else 0
    )
    model = build_model(spec).eval()
    inputs = torch.randn(9, 6)
    restored = deserialize(serialize(model))
    assert restored.spec == spec
    assert model.encode(inputs).shape == (9, 3)
    assert torch.equal(restored.encode(inputs), model.encode(inputs))
    assert torch.equal(
        model.encode(inputs), model.encode(inputs)
    )  # the VAE embeds with its mean, not a sample


def test_vae_loss_adds_the_kl_term_and_a_denoising_loss_differs_from_the_clean_one():
    torch.manual_seed(3)
    inputs = torch.randn(64, 6)
    vae = build_model(AutoencoderSpec(input_dim=6, hidden_dims=(5,), embedding_dim=2, kind="vae"))
    loss, reconstruction = vae.training_loss(inputs, corruption=0.0, vae_beta=1.0, cluster_weight=0.0)
    assert loss.item() > reconstruction.item() > 0
    plain = build_model(AutoencoderSpec(input_dim=6, hidden_dims=(5,), embedding_dim=2))
    clean, _ = plain.training_loss(inputs, corruption=0.0, vae_beta=0.0, cluster_weight=0.0)
    noisy, _ = plain.training_loss(inputs, corruption=0.5, vae_beta=0.0, cluster_weight=0.0)
    assert clean.item() == pytest.approx(torch.nn.functional.mse_loss(plain(inputs), inputs).item())
    assert noisy.item() != pytest.approx(clean.item())


def test_idec_assignments_target_and_clustering_loss():
    model = build_model(
        AutoencoderSpec(input_dim=2, hidden_dims=(), embedding_dim=2, kind="idec", clusters=2)
    )
    with torch.no_grad():
        model.cluster_centers.copy_(torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
    embeddings = torch.tensor([[0.0, 0.0], [4.0, 0.0], [2.0, 0.0]])
    assignments = model.soft_assignments(embeddings)
    # Student's t kernel: 1 / (1 + d^2), normalised per row.
    assert assignments[0].tolist() == pytest.approx([1 / (1 + 0) / (1 + 1 / 17), (1 / 17) / (1 + 1 / 17)])
    assert assignments[2].tolist() == pytest.approx([0.5, 0.5])
    target = target_distribution(assignments)
    assert torch.allclose(target.sum(dim=1), torch.ones(3))
    assert target[0, 0].item() > assignments[0, 0].item()  # confident rows get sharper
    inputs = torch.randn(16, 2)
    with_clusters, reconstruction = model.training_loss(inputs, 0.0, 0.0, cluster_weight=0.5)
    without, _ = model.training_loss(inputs, 0.0, 0.0, cluster_weight=0.0)
    assert with_clusters.item() > reconstruction.item() == pytest.approx(without.item())


def test_early_stopping_counts_only_relative_improvements():
    assert is_improvement(1.0, float("inf"), 0.01)
    assert not is_improvement(float("nan"), float("inf"), 0.01)
    assert is_improvement(0.98, 1.0, 0.01) and not is_improvement(0.995, 1.0, 0.01)


def test_auto_batch_keeps_64_for_small_data_and_grows_by_powers_of_two_to_4096():
    from seglib.representation.stage import auto_batch_size

    assert [auto_batch_size(rows) for rows in (1, 2_700, 21_000)] == [64, 64, 64]
    assert auto_batch_size(100_000) == 512  # 100,000 / 256 = 391 -> 2^9
    assert auto_batch_size(1_000_000) == 4096
    assert auto_batch_size(50_000_000) == 4096
    sizes = [auto_batch_size(rows) for rows in range(1_000, 3_000_000, 7_919)]
    assert sizes == sorted(sizes)
    assert all(size & (size - 1) == 0 for size in sizes)


def test_an_auto_batch_scales_the_learning_rate_by_its_square_root_and_a_fixed_one_keeps_both():
    from seglib.contract.config import load_config
    from seglib.representation.stage import plan_training

    auto = load_config(None, ["train.num_proc=2", "train.learning_rate=0.002"])
    plan = plan_training(auto, input_dim=10, rows=1_000_000)
    assert (plan.batch_size, plan.learning_rate) == (4096, pytest.approx(0.002 * 8))
    assert plan.steps_per_epoch == 123  # ceil(1,000,000 / (4096 x 2 workers))
    small = plan_training(auto, input_dim=10, rows=2_700)  # one worker: far below min_rows_per_worker
    assert (small.batch_size, small.learning_rate, small.steps_per_epoch, small.workers) == (
        64, pytest.approx(0.002), 43, 1
    )  # fmt: skip
    assert plan_training(auto, input_dim=10, rows=2_700, workers=2).steps_per_epoch == 22
    fixed = load_config(None, ["train.batch_size=256", "train.learning_rate=0.002"])
    plan = plan_training(fixed, input_dim=10, rows=1_000_000)
    assert (plan.batch_size, plan.learning_rate) == (256, 0.002)


def test_small_data_trains_on_fewer_processes_than_num_proc_until_each_has_its_share_of_rows():
    from seglib.contract.config import load_config
    from seglib.representation.stage import training_workers

    settings = load_config(None, ["train.num_proc=4", "train.min_rows_per_worker=1000"]).train
    rows = [0, 999, 1_000, 1_999, 2_000, 3_999, 4_000, 10**9]
    assert [training_workers(settings, count) for count in rows] == [1, 1, 1, 1, 2, 3, 4, 4]
    always = settings.model_copy(update={"min_rows_per_worker": 0})
    assert {training_workers(always, count) for count in rows} == {4}


def test_cpu_ranks_share_the_cores_this_process_may_use_whatever_spark_set_for_omp(monkeypatch):
    import os

    from seglib.representation.rank_loop import rank_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what a Spark Python worker runs with
    assert [rank_threads(local_size, 4096) for local_size in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    # Small steps gain nothing from threads and lose much to a busy host: one thread whatever the cores.
    assert {rank_threads(local_size, 64) for local_size in (1, 2, 3, 8, 16)} == {1}
    assert rank_threads(1, 2047) == 1 and rank_threads(1, 2048) == 8


def test_ranks_count_the_others_on_their_host_whatever_their_launcher_called_local():
    from seglib.representation.rank_loop import host_key, ranks_sharing_host

    # Four ranks, three of them on worker-a (as TorchDistributor places them: one torchrun per task).
    keys = [host_key(name) for name in ("worker-a", "worker-b", "worker-a", "worker-a")]
    assert [ranks_sharing_host(keys, rank) for rank in range(4)] == [3, 1, 3, 3]
    assert host_key("worker-a") == host_key("worker-a") != host_key("worker-b")


def forecast_rows(inputs: torch.Tensor, earlier: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor):
    return torch.cat([inputs, earlier, targets, seen.unsqueeze(1)], dim=1)


def test_the_forecast_objective_adds_the_weighted_forecast_of_the_customers_seen_by_the_cutoff():
    torch.manual_seed(3)
    spec = AutoencoderSpec(input_dim=4, hidden_dims=(8,), embedding_dim=2, forecast_targets=3)
    model = build_model(spec)
    inputs, earlier, targets = torch.randn(6, 4), torch.randn(6, 4), torch.randn(6, 3)
    seen = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    rows = forecast_rows(inputs, earlier, targets, seen)
    assert rows.shape[1] == training_row_width(spec) == 12

    loss, reconstruction = TrainingObjective(model, forecast_weight=0.5)(rows, 0.0, 1.0, 0.0)

    expected_reconstruction = ((model(inputs) - inputs) ** 2).mean()
    errors = ((model.forecast_head(model.encode(earlier)) - targets) ** 2).sum(dim=1)
    expected_forecast = errors[seen == 1].mean()
    assert reconstruction.item() == pytest.approx(expected_reconstruction.item(), rel=1e-5)
    assert loss.item() == pytest.approx((expected_reconstruction + 0.5 * expected_forecast).item(), rel=1e-5)
    # A customer first seen after the cut-off has no earlier history: whatever its row holds there
    # changes nothing.
    unseen = seen == 0
    earlier[unseen], targets[unseen] = 100.0, -100.0
    again, _ = TrainingObjective(model, forecast_weight=0.5)(
        forecast_rows(inputs, earlier, targets, seen), 0.0, 1.0, 0.0
    )
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()
    assert model.forecast_head[0].weight.grad.abs().sum() > 0
    assert model.encoder[0].weight.grad.abs().sum() > 0


def test_the_forecast_head_learns_the_window_from_earlier_inputs_and_is_saved_with_the_model():
    torch.manual_seed(4)
    spec = AutoencoderSpec(input_dim=5, hidden_dims=(16,), embedding_dim=2, forecast_targets=1)
    model = build_model(spec)
    objective = TrainingObjective(model, forecast_weight=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    earlier = torch.randn(512, 5)
    targets = (earlier[:, 2] - earlier[:, 4]).unsqueeze(1)  # what comes next depends on two inputs
    rows = forecast_rows(torch.randn(512, 5), earlier, targets, torch.ones(512))

    def forecast_error() -> float:
        with torch.no_grad():
            return float(((model.forecast_head(model.encode(earlier)) - targets) ** 2).mean() / targets.var())

    before = forecast_error()
    for _ in range(300):
        optimizer.zero_grad()
        loss, _ = objective(rows, 0.0, 1.0, 0.0)
        loss.backward()
        optimizer.step()

    assert before > 0.5 and forecast_error() < 0.1
    model.eval()
    restored = deserialize(serialize(model))
    assert restored.spec.forecast_targets == 1
    assert torch.equal(
        restored.forecast_head(restored.encode(earlier)), model.forecast_head(model.encode(earlier))
    )
