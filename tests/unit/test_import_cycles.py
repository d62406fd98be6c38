"""No import cycle in the package, deferred or type-only: the layer contract (pyproject, ``lint-imports``) says
who may import whom; this says nothing comes back round, even within a layer or under ``TYPE_CHECKING``."""

from __future__ import annotations

import grimp
import pytest

pytestmark = pytest.mark.timeout(30)


def test_no_module_imports_one_that_leads_back_to_it():
    graph = grimp.build_graph("trade_stream", include_external_packages=False)
    cycles = sorted((module, imported) for module in graph.modules
                    for imported in graph.find_modules_directly_imported_by(module)
                    if graph.chain_exists(imported, module))
    assert cycles == [], [graph.find_shortest_chain(imported, module) for module, imported in cycles[:3]]
