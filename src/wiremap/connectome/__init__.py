"""Connectome tables, versions, queries (Python, CLI, HTTP) and interop.

Build a version from a workspace's synapse table, then ask it questions::

    from wiremap.connectome import Connectome, NeuronCriteria, build, fetch_neurons
    build(Workspace.open("ws/"))
    with Connectome("ws/") as c:
        fetch_neurons(NeuronCriteria(type="PC", ei="I", min_post=20), client=c)
"""

from wiremap.connectome.criteria import NeuronCriteria, QueryError
from wiremap.connectome.queries import (
    Connectome,
    default_client,
    fetch_adjacencies,
    fetch_downstream,
    fetch_neurons,
    fetch_shortest_path,
    fetch_synapses,
    fetch_upstream,
    fetch_versions,
    inject_client,
    set_default_client,
    set_property,
)
from wiremap.connectome.tables import (
    build,
    ensure_database,
    import_groundtruth,
    latest_version,
    versions,
)

__all__ = [
    "Connectome",
    "NeuronCriteria",
    "QueryError",
    "build",
    "default_client",
    "ensure_database",
    "fetch_adjacencies",
    "fetch_downstream",
    "fetch_neurons",
    "fetch_shortest_path",
    "fetch_synapses",
    "fetch_upstream",
    "fetch_versions",
    "import_groundtruth",
    "inject_client",
    "latest_version",
    "set_default_client",
    "set_property",
    "versions",
]
