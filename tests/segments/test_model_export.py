"""The pyfunc segmentation model's scoring, in process: it assigns in the space its segmentation was fitted in."""

from __future__ import annotations

import json
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from seglib.representation.models import AutoencoderSpec, build_model, serialize
from seglib.segments.model_export import ScoringArrays, _python_model_class


@pytest.mark.parametrize("space", ["embedding", "reconstruction"])
def test_the_pyfunc_model_assigns_each_customer_to_the_nearest_centre_of_its_segmentations_space(
    tmp_path, space
):
    torch.manual_seed(5)
    encoder = build_model(AutoencoderSpec(input_dim=3, hidden_dims=(6,), embedding_dim=2)).eval()
    rows = pd.DataFrame(np.random.default_rng(6).normal(size=(40, 3)), columns=["a", "b", "c"])
    with torch.no_grad():
        inputs = torch.tensor(rows.to_numpy(), dtype=torch.float32)
        embeddings = encoder.encode(inputs)
        points = (encoder.decoder(embeddings) if space == "reconstruction" else embeddings).double().numpy()
    centers = points[[0, 1, 2]]  # three customers' own points: every segment is someone's nearest
    arrays = ScoringArrays(
        numeric=["a", "b", "c"], log_transformed=[False] * 3, all_null=[False] * 3, medians=[0.0] * 3,
        means=[0.0] * 3, deviations=[1.0] * 3, weights=[1.0] * 3, flags=[], categorical={},
        input_low=None, input_high=None, centers=centers.tolist(), segment_of=[4, 9, 2],
        names={"4": "four", "9": "nine", "2": "two"}, novelty_threshold=100.0, space=space,
    )  # fmt: skip
    (tmp_path / "scoring.json").write_text(json.dumps(asdict(arrays)))
    (tmp_path / "encoder.pt").write_bytes(serialize(encoder))
    model = _python_model_class()()
    model.load_context(
        SimpleNamespace(
            artifacts={"scoring": str(tmp_path / "scoring.json"), "encoder": str(tmp_path / "encoder.pt")}
        )
    )

    scored = model.predict(None, rows)

    distances = np.sqrt(((points[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2))
    nearest = distances.argmin(axis=1)
    assert scored["segment_id"].tolist() == [[4, 9, 2][index] for index in nearest]
    assert scored["segment_id"].head(3).tolist() == [4, 9, 2]
    np.testing.assert_allclose(scored["distance_to_centroid"], distances.min(axis=1), rtol=1e-4, atol=1e-5)
    assert len(set(scored["segment_id"])) == 3
