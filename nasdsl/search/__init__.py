"""Architecture search over a spec's design space (``nasdsl search``, docs/search.md).

nasdsl describes; Optuna samples and stores; Ray schedules. The modules, in
the order a trial meets them:

* :mod:`~nasdsl.search.params`: the spec's choices as Optuna parameters, asked define-by-run;
* :mod:`~nasdsl.search.identity`: the key that makes two proposals one variant;
* :mod:`~nasdsl.search.objectives`: the objectives (figures, zero-cost proxies, metrics);
* :mod:`~nasdsl.search.driver`: the ask-check-dispatch-tell loop;
* :mod:`~nasdsl.search.executors`, :mod:`~nasdsl.search.trial`: where and how a trial runs;
* :mod:`~nasdsl.search.evaluators`, :mod:`~nasdsl.search.proxies`: what it runs;
* :mod:`~nasdsl.search.study`, :mod:`~nasdsl.search.report`: the Optuna study, and reading it back.

Optuna and Ray are optional (``pip install 'nasdsl[search]'``): importing this
package needs neither; running a search needs Optuna, and ``--ray`` needs Ray.
"""

from nasdsl.search.driver import Budget, Config, Summary, run_search
from nasdsl.search.evaluators import parse_evaluator
from nasdsl.search.identity import variant_key
from nasdsl.search.objectives import OBJECTIVES, goal

__all__ = ["OBJECTIVES", "Budget", "Config", "Summary", "goal", "parse_evaluator", "run_search", "variant_key"]
