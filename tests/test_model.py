"""Executor-side code, tested in process without Spark."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from seglib.embed import encode_batches
from seglib.model import Autoencoder, AutoencoderSpec, deserialize, serialize


def test_autoencoder_shapes_follow_the_spec():
    model = Autoencoder(AutoencoderSpec(input_dim=12, hidden_dims=(16, 8), embedding_dim=3))
    inputs = torch.randn(5, 12)
    assert model.encode(inputs).shape == (5, 3)
    assert model(inputs).shape == (5, 12)


def test_serialized_model_round_trips_to_identical_outputs():
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderSpec(input_dim=6, hidden_dims=(4,), embedding_dim=2, dropout=0.1)).eval()
    restored = deserialize(serialize(model))
    inputs = torch.randn(7, 6)
    assert restored.spec == model.spec
    assert torch.equal(restored.encode(inputs), model.encode(inputs))


def test_encode_batches_embeds_each_arrow_batch_like_the_model():
    torch.manual_seed(1)
    model = Autoencoder(AutoencoderSpec(input_dim=4, hidden_dims=(8,), embedding_dim=2)).eval()
    rows = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    batches = [pd.Series(list(rows[:3])), pd.Series([], dtype=object), pd.Series(list(rows[3:]))]
    outputs = list(encode_batches(serialize(model), iter(batches)))
    assert [len(batch) for batch in outputs] == [3, 0, 2]
    embedded = np.stack([*outputs[0], *outputs[2]])
    with torch.no_grad():
        expected = model.encode(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(embedded, expected, rtol=1e-6)
