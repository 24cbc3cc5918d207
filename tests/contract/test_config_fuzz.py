"""Random configs and overrides: every one either validates or fails with a ConfigError message."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seglib.contract.config import SeglibConfig, load_config
from seglib.contract.errors import ConfigError

SECTIONS = {name: list(field.annotation.model_fields) for name, field in SeglibConfig.model_fields.items()}  # type: ignore[union-attr]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.dates().map(str),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
known_keys = st.sampled_from([(section, key) for section, keys in SECTIONS.items() for key in keys])
any_keys = st.one_of(known_keys, st.tuples(st.text(max_size=8), st.text(max_size=8)))


def load_or_explain(path=None, overrides=None):
    try:
        return load_config(path, overrides)
    except ConfigError as error:
        assert str(error).strip(), "a ConfigError must say what is wrong"
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(any_keys, values), max_size=5))
def test_random_config_files_validate_or_explain(tmp_path, entries):
    document: dict = {}
    for (section, key), value in entries:
        document.setdefault(section, {})[key] = value
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    result = load_or_explain(path)
    assert result is None or isinstance(result, SeglibConfig)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=30),
            known_keys.map(lambda k: f"{k[0]}.{k[1]}=").flatmap(
                lambda prefix: st.text(max_size=15).map(lambda v: prefix + v)
            ),
        ),
        max_size=4,
    )
)
def test_random_overrides_validate_or_explain(overrides):
    result = load_or_explain(None, overrides)
    assert result is None or isinstance(result, SeglibConfig)
