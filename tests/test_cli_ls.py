"""``mmkgc ls FAMILY`` lists what each resolver (or, before it lands, each name table) knows."""

import pytest

from mmkgc import cli


def test_ls_losses_lists_every_loss_with_its_synonyms_and_doc(capsys):
    from mmkgc.cli.ls import Family, entries
    from mmkgc.losses import SelfAdversarialSigmoidLoss

    rows = {name: (also, doc) for name, also, doc in entries(Family.losses)}
    assert set(rows) == {"marginranking", "softplus", "selfadversarialsigmoid", "bcewithlabelsmoothing",
                         "softmaxcrossentropy"}
    also, doc = rows["selfadversarialsigmoid"]
    assert also == ["nssa", "selfadversarialsigmoid", "sigmoid"] or also == ["nssa", "sigmoid"]
    assert doc == " ".join(SelfAdversarialSigmoidLoss.__doc__.strip().split("\n\n")[0].split())
    assert cli.run(["ls", "losses"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("nssa", "margin", "softplus", "bce", "softmaxce"))


@pytest.mark.parametrize("family, expected", [
    ("scorers", ("transe", "distmult", "complex", "rotate", "tucker")),
    ("fusions", ("concat", "attention")),
    ("adapters", ("linear", "mlp")),
    ("loops", ("negative_sampling", "one_to_n")),
    ("trackers", ("tensorboard", "mlflow", "wandb")),
])
def test_ls_every_family(capsys, family, expected):
    assert cli.run(["ls", family]) == 0
    out = capsys.readouterr().out
    flat = out.replace("_", "")
    for name in expected:  # the resolvers spell names without "_" (negativesampling), the name tables with it
        assert name.replace("_", "") in flat


def test_ls_unknown_family_is_a_usage_error_listing_the_families(capsys):
    assert cli.run(["ls", "optimizers"]) == 2
    err = capsys.readouterr().err
    assert "'optimizers' is not one of" in err and "'fusions'" in err and "Traceback" not in err


def test_help_lists_the_valid_values_of_typed_choices(capsys):
    assert cli.run(["evaluate", "--help"]) == 0
    out = "".join(capsys.readouterr().out.split())
    assert "test|valid|valid_clean" in out and "best|last" in out and "mmkgc|pykeen" in out
    assert cli.run(["evaluate", "run", "--split", "tset"]) == 2
    err = capsys.readouterr().err
    assert "'tset' is not one of 'test', 'valid', 'valid_clean'" in err


def test_cli_choices_match_the_library_name_lists():
    """The typed CLI choices spell the same values the library accepts (no second list drifting apart)."""
    from typing import get_args

    from mmkgc.cli import _common
    from mmkgc.config import EnrichmentConfig
    from mmkgc.vemp import FEATURE_MODES

    assert set(_common.FeatureMode) == set(FEATURE_MODES)
    assert set(_common.EnrichText) == set(get_args(EnrichmentConfig.model_fields["text"].annotation))


def test_tables_are_not_squeezed_to_80_columns_without_a_terminal(capsys):
    """Piped or in CI, rich would lay a table out for 80 columns and wrap or cut its cells; the CLI console uses
    200 columns there, so a scorer's one-sentence description stays on one line."""
    from mmkgc.cli._common import console
    from mmkgc.progress import is_terminal

    assert not is_terminal() and console.width == 200
    assert cli.run(["ls", "scorers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any('ComplEx (Trouillon et al., 2016, "Complex Embeddings for Simple Link Prediction").' in line
               for line in lines)
