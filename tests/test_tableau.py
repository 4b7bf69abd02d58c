"""Butcher tableaus check themselves: consistency and order conditions."""

import pytest

from solvers import TABLEAUS, ButcherTableau


def test_every_shipped_tableau_satisfies_the_order_it_claims():
    assert {name: t.order for name, t in TABLEAUS.items()} == {
        "euler": 1, "midpoint": 2, "heun": 2, "ralston": 2, "ssprk3": 3, "rk4": 4,
    }


def test_a_tableau_claiming_too_high_an_order_is_rejected_naming_the_condition():
    with pytest.raises(ValueError, match=r"claims order 3 but violates sum\(b c\^2\) = 1/3"):
        ButcherTableau("bad", ((0.0, 0.0), (1.0, 0.0)), (0.5, 0.5), (0.0, 1.0), order=3)


def test_a_typo_in_c_is_rejected():
    with pytest.raises(ValueError, match=r"c\[1\]=0.4 but row 1 of A sums to 0.5"):
        ButcherTableau("typo", ((0.0, 0.0), (0.5, 0.0)), (0.0, 1.0), (0.0, 0.4), order=2)


def test_an_implicit_tableau_is_rejected():
    with pytest.raises(ValueError, match="not strictly lower-triangular"):
        ButcherTableau("implicit", ((0.5,),), (1.0,), (0.5,), order=1)
