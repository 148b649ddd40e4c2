"""FeatureTable validation, fill policies and presence rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmkgc.features.store import FeatureTable, make_provenance, presence_from_values


def _table(n=5, d=3, modality="image", present=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return FeatureTable(values=torch.randn(n, d, generator=g), modality=modality, present=present)


def test_basic_properties_and_defaults():
    t = _table(5, 3)
    assert t.num_entities == 5 and len(t) == 5 and t.dim == 3
    assert not t.is_tokens and t.num_tokens is None
    assert t.values.dtype == torch.float32
    assert t.present.dtype == torch.bool and bool(t.present.all())
    assert t.provenance["mmkgc_version"]
    assert t.provenance["created"].endswith("+00:00")  # UTC ISO-8601


def test_numpy_and_float64_inputs_are_converted():
    t = FeatureTable(values=np.arange(6, dtype=np.float64).reshape(3, 2), modality="numeric", present=np.array([1, 0, 1]))
    assert t.values.dtype == torch.float32
    assert t.present.tolist() == [True, False, True]


def test_token_table_shape_and_default_mask():
    t = FeatureTable(values=torch.zeros(4, 7, 8), modality="text")
    assert t.is_tokens and t.num_tokens == 7 and t.dim == 8
    assert t.token_mask.shape == (4, 7) and bool(t.token_mask.all())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"values": torch.zeros(3)}, "N, d"),
        ({"values": torch.zeros(2, 2, 2, 2)}, "N, d"),
        ({"values": torch.zeros(3, 2, dtype=torch.int64)}, "floating"),
        ({"values": torch.zeros(3, 2), "present": torch.ones(4, dtype=torch.bool)}, "presence mask"),
        ({"values": torch.zeros(3, 2), "present": torch.tensor([0.0, 1.0, 1.0])}, "bool"),
        ({"values": torch.zeros(3, 2), "present": torch.tensor([0, 2, 1])}, "0/1"),
        ({"values": torch.zeros(3, 2), "token_mask": torch.ones(3, 2, dtype=torch.bool)}, "token_mask given"),
        ({"values": torch.zeros(3, 4, 2), "token_mask": torch.ones(3, 5, dtype=torch.bool)}, "token_mask"),
        ({"values": torch.zeros(3, 2), "provenance": {"x": object()}}, "JSON"),
    ],
)
def test_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureTable(modality="image", **kwargs)


def test_invalid_modality_name():
    with pytest.raises(ValueError, match="modality name"):
        FeatureTable(values=torch.zeros(2, 2), modality="bad name/with slash")


def test_nan_in_present_row_is_named():
    v = torch.zeros(6, 2)
    v[4, 1] = math.nan
    with pytest.raises(ValueError, match=r"'image'.*row 4"):
        FeatureTable(values=v, modality="image")
    v[2, 0] = math.inf
    with pytest.raises(ValueError, match=r"row 2"):
        FeatureTable(values=v, modality="image")


def test_nan_in_missing_row_is_allowed_but_keep_refuses():
    v = torch.ones(3, 2)
    v[1] = math.nan
    t = FeatureTable(values=v, modality="image", present=torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match="keep"):
        t.with_fill("keep")
    z = t.with_fill("zeros")
    assert torch.equal(z.values[1], torch.zeros(2))
    assert z.present.tolist() == [True, False, True]  # fill does not make rows present


def test_nan_in_padding_token_is_ignored():
    v = torch.ones(2, 3, 2)
    v[0, 2] = math.nan
    mask = torch.tensor([[True, True, False], [True, True, True]])
    t = FeatureTable(values=v, modality="text", token_mask=mask)
    assert t.is_tokens
    mask[0, 2] = True
    with pytest.raises(ValueError, match="row 0"):
        FeatureTable(values=v, modality="text", token_mask=mask)


def test_fill_zeros_and_mean_pooled():
    v = torch.tensor([[1.0, 2.0], [9.0, 9.0], [3.0, 6.0], [7.0, 7.0]])
    t = FeatureTable(values=v, modality="image", present=torch.tensor([True, False, True, False]))
    zeros = t.with_fill("zeros")
    assert torch.equal(zeros.values, torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, 6.0], [0.0, 0.0]]))
    mean = t.with_fill("mean")
    assert torch.equal(mean.values[1], torch.tensor([2.0, 4.0]))
    assert torch.equal(mean.values[3], torch.tensor([2.0, 4.0]))
    assert torch.equal(mean.values[0], v[0]) and mean.provenance["fill"] == "mean"
    keep = t.with_fill("keep")
    assert torch.equal(keep.values, v)
    assert torch.equal(t.values, v)  # the original is untouched
    with pytest.raises(ValueError, match="unknown fill policy"):
        t.with_fill("learned")


def test_fill_mean_without_present_rows_fails():
    t = FeatureTable(values=torch.ones(2, 2), modality="image", present=torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="no entity is present"):
        t.with_fill("mean")


def test_fill_mean_tokens_uses_real_tokens_of_present_rows():
    v = torch.zeros(3, 2, 1)
    v[0, 0, 0], v[0, 1, 0] = 1.0, 100.0  # the 100 is padding and must not count
    v[1, 0, 0], v[1, 1, 0] = 3.0, 5.0
    v[2] = 42.0  # missing entity
    mask = torch.tensor([[True, False], [True, True], [True, True]])
    t = FeatureTable(values=v, modality="text", token_mask=mask, present=torch.tensor([True, True, False]))
    f = t.with_fill("mean")
    assert f.values[2, 0, 0].item() == pytest.approx(3.0)  # (1 + 3 + 5) / 3
    assert f.token_mask[2].tolist() == [True, False]
    assert f.values[2, 1, 0].item() == 0.0


def test_pooled_and_l2():
    v = torch.tensor([[[1.0, 0.0], [3.0, 4.0]], [[0.0, 2.0], [8.0, 8.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    t = FeatureTable(values=v, modality="text", token_mask=mask)
    p = t.pooled("mean")
    assert torch.equal(p.values, torch.tensor([[2.0, 2.0], [0.0, 2.0]]))
    assert torch.equal(t.pooled("first").values, v[:, 0])
    n = p.l2_normalized()
    assert torch.allclose(n.values.norm(dim=1), torch.ones(2))
    zero = FeatureTable(values=torch.zeros(1, 3), modality="image").l2_normalized()
    assert torch.equal(zero.values, torch.zeros(1, 3))


def test_presence_nonzero_rule():
    v = torch.tensor([[0.0, 0.0], [0.0, 1e-9], [1.0, 0.0], [math.nan, 1.0]])
    assert presence_from_values(v, "nonzero").tolist() == [False, True, True, False]
    assert presence_from_values(v, "nonzero", atol=1e-6).tolist() == [False, False, True, False]


def test_presence_not_equal_fill_rule_with_mode_and_explicit_vector():
    fill = torch.tensor([0.5, -0.5])
    v = torch.tensor([[1.0, 2.0], [0.5, -0.5], [3.0, 4.0], [0.5, -0.5], [0.5, -0.5 + 1e-7]])
    # most common exact row = fill; the near-equal row counts only with a tolerance
    assert presence_from_values(v, "not_equal_fill").tolist() == [True, False, True, False, True]
    assert presence_from_values(v, "not_equal_fill", fill_vector=fill, atol=1e-6).tolist() == [
        True, False, True, False, False,
    ]
    unique = torch.arange(6.0).reshape(3, 2)
    assert presence_from_values(unique, "not_equal_fill").tolist() == [True, True, True]
    with pytest.raises(ValueError, match="fill_vector"):
        presence_from_values(v, "not_equal_fill", fill_vector=torch.zeros(3))
    with pytest.raises(ValueError, match="unknown presence rule"):
        presence_from_values(v, "zeros")


def test_make_provenance_fields():
    p = make_provenance("file.pth", rule="nonzero")
    assert p["source"] == "file.pth" and p["options"] == {"rule": "nonzero"}
    assert {"created", "mmkgc_version"} <= set(p)
