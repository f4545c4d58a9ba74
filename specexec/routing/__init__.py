"""Routing: a layer in front of the engine that picks which route (a ``Policy``) a query takes.

>>> from specexec import routing
>>> router = specexec.Router(
...     routes={"simple": specexec.Policy.hedge(["mini-us", "mini-eu"]), "code": specexec.Policy.failover(["coder"])},
...     select=[routing.rule("code", regex=r"```|\\bdef "), routing.classifier(my_fn)],
...     default="simple",
...     speculate=True,
... )
>>> result = await specexec.run(query, router)
>>> result.route, result.trace.route

Selectors are asked in order and the first confident decision wins: ``rule`` (sub-ms
conditions), ``classifier`` (any callable), ``semantic`` (cosine similarity to exemplars),
``trained`` (a logistic regression over embeddings), ``llm`` (a small model asked for a JSON
route name). ``decide`` returns the decision without running it. ``Budget`` steers routes down
as spend grows. ``Router.from_toml`` / ``to_toml`` read and write routers as TOML;
``router_toml`` writes one from its shape as plain data (e.g. a router with routes rewritten).
"""

from .._trace import RouteDecision as RouteDecision
from ..verifiers import Hesitancy as Hesitancy
from ..verifiers import SelfConfidence as SelfConfidence
from ..verifiers import stated_confidence as stated_confidence
from ._budget import Budget as Budget
from ._budget import BudgetState as BudgetState
from ._budget import BudgetStore as BudgetStore
from ._budget import Downgrade as Downgrade
from ._budget import InMemoryBudgetStore as InMemoryBudgetStore
from ._budget import downgrade as downgrade
from ._confidence import CONFIDENCE_INSTRUCTION as CONFIDENCE_INSTRUCTION
from ._confidence import ask_confidence as ask_confidence
from ._confidence import hesitancy as hesitancy
from ._confidence import self_confidence as self_confidence
from ._context import SelectContext as SelectContext
from ._llm import DEFAULT_INSTRUCTION as DEFAULT_INSTRUCTION
from ._llm import LlmRouter as LlmRouter
from ._llm import llm as llm
from ._router import Router as Router
from ._router import decide as decide
from ._router import default_similar as default_similar
from ._router import similar_by as similar_by
from ._selectors import Choice as Choice
from ._selectors import Classifier as Classifier
from ._selectors import Rule as Rule
from ._selectors import Selector as Selector
from ._selectors import classifier as classifier
from ._selectors import rule as rule
from ._semantic import Embedder as Embedder
from ._semantic import Semantic as Semantic
from ._semantic import semantic as semantic
from ._toml import router_toml as router_toml
from ._trained import TrainedClassifier as TrainedClassifier
from ._trained import trained as trained

Decision = RouteDecision
"""What ``decide`` returns and ``Trace.route`` holds (an alias of ``RouteDecision``)."""
