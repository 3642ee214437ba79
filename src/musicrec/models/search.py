"""The one hyperparameter search of the project: Optuna's TPE sampler, seeded.

``tune`` searches WMF's settings with it; ``bow``, ``dbn`` and ``cnn`` search their training
settings (:func:`musicrec.models.content.tune_content_model`). Every search tries params.yaml's
own values first, so its choice is never worse than them on validation, and the same seed and
data give the same choice. A search's record (:func:`summary`) goes to
``reports/tuning/<name>.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def search(
    space: dict[str, tuple],
    objective: Callable[[dict], float],
    trials: int,
    seed: int,
    first: dict | None = None,
) -> tuple[dict, list[dict]]:
    """The values in ``space`` that maximise ``objective``, by Optuna's TPE sampler, seeded.

    Parameters
    ----------
    space : dict
        Name -> ``("choice", options)``, ``("log", low, high)`` (log-uniform float) or
        ``("int", low, high)``.
    objective : callable
        Values -> the validation score (higher is better).
    trials : int
        Values tried, ``first`` (params.yaml's own, when inside the space) being the first:
        the choice is never worse than it on validation.

    Returns
    -------
    best : dict
        The values of the best trial (the first of equals).
    trace : list of dict
        Per trial: its values, ``validation_map`` and ``seconds``.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trace: list[dict] = []

    def suggest(trial, name: str, spec: tuple):
        kind, *bounds = spec
        if kind == "choice":
            return trial.suggest_categorical(name, list(bounds[0]))
        if kind == "int":
            return trial.suggest_int(name, *bounds)
        return trial.suggest_float(name, *bounds, log=True)

    def run(trial) -> float:
        values = {name: suggest(trial, name, spec) for name, spec in space.items()}
        start = time.perf_counter()
        score = objective(values)
        trace.append(
            {
                "trial": trial.number,
                **values,
                "validation_map": score,
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
        return score

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    if first is not None and all(_inside(first[name], spec) for name, spec in space.items()):
        study.enqueue_trial(first)
    study.optimize(run, n_trials=trials, show_progress_bar=True)
    return study.best_trial.params, trace


def _inside(value, spec: tuple) -> bool:
    kind, *bounds = spec
    return value in bounds[0] if kind == "choice" else bounds[0] <= value <= bounds[1]


def own_trial(trace: list[dict], values: dict) -> dict | None:
    """The trial of ``values`` (params.yaml's own) in a search's trace; None if never tried."""
    return next((t for t in trace if all(t[k] == v for k, v in values.items())), None)


def summary(chosen: dict, own_values: dict, trace: list[dict]) -> dict:
    """A search's record: the values chosen, the best and params.yaml's own validation mAP
    (None when that trial was not run), the number of trials and the trace."""
    best = max(trace, key=lambda t: t["validation_map"]) if trace else None
    own = own_trial(trace, own_values)
    return {
        "chosen": chosen,
        "validation_map": best["validation_map"] if best else None,
        "params_yaml_map": own["validation_map"] if own else None,
        "trials": len(trace),
        "trace": trace,
    }
