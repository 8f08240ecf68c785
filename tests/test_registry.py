import pytest

from compress.errors import CompressError
from compress.registry import Registry
from compress.stages.quantize import METHODS
from compress.surgery.strategies import STRATEGIES, Strategy


def test_a_name_taken_twice_fails_where_it_is_added():
    fruit = Registry[int]("fruit")
    fruit.add("apple", 1)
    with pytest.raises(ValueError, match="fruit registry: 'apple' is registered twice"):
        fruit.register("apple")(2)
    assert fruit["apple"] == 1


def test_an_unknown_name_is_refused_with_the_known_ones():
    fruit = Registry[int]("fruit")
    fruit.add("apple", 1)
    fruit.add("pear", 2)
    with pytest.raises(CompressError, match=r"^unknown fruit 'plum'; expected one of apple, pear$"):
        fruit["plum"]
    assert "plum" not in fruit and "pear" in fruit and fruit.get("plum") is None
    assert list(fruit) == ["apple", "pear"] == list(fruit.names()) and dict(fruit.items()) == {"apple": 1, "pear": 2}


def test_the_recipe_types_are_read_from_the_registries():
    assert Strategy.__args__ == STRATEGIES.names()
    assert STRATEGIES.names()[0] == "top" and METHODS.names()[-1] == "best"  # tables list them in this order
