"""Attack templates: segments reassemble the render; bad templates are clear errors."""

import pytest

from steerlens.datasets.attacks import ATTACKS, Attack, get_attack
from steerlens.errors import SteerlensError


@pytest.mark.parametrize("name", ATTACKS)
def test_segments_reassemble_render(name):
    a = get_attack(name)
    head, body, tail = a.segments("GOAL TEXT", "Sure, here is X")
    assert head + body + tail == a.render("GOAL TEXT", "Sure, here is X")
    assert "GOAL TEXT" in body
    h2, _, t2 = a.segments("other", "other target")
    assert (h2, t2) == (head, tail), "head and tail must not depend on the goal"


def test_template_validation_and_unknown():
    with pytest.raises(SteerlensError, match="placeholder"):
        Attack("bad", "no goal here")
    with pytest.raises(SteerlensError, match="unknown attack"):
        get_attack("dan-9000")
    assert "AIM" in get_attack("aim").template
