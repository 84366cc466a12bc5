"""The service catalog: every service the framework releases is a YAML entry, not code.

Where it sits: the platforms read how a release runs (``ServiceEntry.local_launch``,
``kube_deployment``, ``kube_image``), the controller reads consumers, hooks (``run_hook``) and
default rollouts (``rollout_spec``), and ``canary lint`` calls :func:`lint_catalog`.  Nothing in
``canary/`` names a service; the incident's three are entries in ``manifests/services/``.
"""

from canary.catalog.entry import Catalog, ServiceEntry
from canary.catalog.hooks import HookContext, HookResult, run_hook
from canary.catalog.loader import CatalogError, Problem, check_file, lint_catalog, load_catalog
from canary.catalog.model import (
    CommandCall,
    Consumer,
    Hook,
    HttpCall,
    KubeRun,
    Launch,
    LocalRun,
    Moment,
    OnFailure,
    ProcessTemplate,
    RolloutDefaults,
)

__all__ = [
    "Catalog",
    "CatalogError",
    "CommandCall",
    "Consumer",
    "Hook",
    "HookContext",
    "HookResult",
    "HttpCall",
    "KubeRun",
    "Launch",
    "LocalRun",
    "Moment",
    "OnFailure",
    "Problem",
    "ProcessTemplate",
    "RolloutDefaults",
    "ServiceEntry",
    "check_file",
    "lint_catalog",
    "load_catalog",
    "run_hook",
]
