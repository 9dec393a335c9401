from __future__ import annotations

import pytest
from core_helpers import sample_markets

from pipeline.core.engine import MatchingEngine
from pipeline.core.markets import Market


@pytest.fixture
def markets() -> dict[str, Market]:
    return sample_markets()


@pytest.fixture
def engine(markets: dict[str, Market]) -> MatchingEngine:
    return MatchingEngine(markets)
