"""What customers read: the article before a GPU's name is the one it is said with."""

from __future__ import annotations

import pytest

from instances.models import GpuType, indefinite_article


@pytest.mark.parametrize(
    ("name", "article"),
    [
        ("RTX 5090", "an"),
        ("RTX PRO 6000", "an"),
        ("H100", "an"),
        ("H200 NVL", "an"),
        ("A100 80GB", "an"),
        ("L40S", "an"),
        ("B200", "a"),
        ("GeForce RTX 4090", "a"),
        ("Tesla T4", "a"),
        ("Instinct MI300X", "an"),
        ("", "a"),
    ],
)
def test_the_article_follows_how_the_name_is_said(name, article):
    assert indefinite_article(name) == article


def test_a_gpu_type_names_itself_with_its_article():
    assert GpuType(display_name="RTX 5090").with_article == "an RTX 5090"
