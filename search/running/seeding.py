"""What a launch puts into its study before any worker starts: known configurations first
(--enqueue, --enqueue-study: Optuna's enqueue_trial) and the finished trials of a compatible
earlier study (--warm-start-from: add_trial). Everything is checked before the study is
created, so bad input is one line and nothing is written."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import optuna

from studies import ParamError, Params, StudyError, TrialConfig, load_study

from search.errors import SearchError
from search.record import COUNTED, ENQUEUED, ORIGIN, WARM_START
from search.settings import DATA_ATTR, DEFINING, SETTINGS_ATTR, SearchSettings
from search.urls import redact

ENQUEUE = "--enqueue"


@dataclass(frozen=True)
class Seeds:
    """The launch's options, as given."""

    enqueue: tuple[str, ...] = ()  # NAME=VALUE,NAME=VALUE each
    enqueue_studies: tuple[str, ...] = ()  # fixed studies, e.g. seed-fcn
    warm_start_from: str | None = None
    warm_start_storage: str | None = None  # default: the launched study's storage

    def __bool__(self) -> bool:
        return bool(self.enqueue or self.enqueue_studies or self.warm_start_from)


@dataclass(frozen=True)
class Enqueued:
    params: dict[str, Any]  # searched names only, as Optuna's distributions hold them
    source: str  # what the trial's record says it is: --enqueue, or the fixed study's name
    notes: tuple[str, ...] = ()  # where the space's constants replaced the fixed study's values


@dataclass
class Plan:
    """Checked and ready to write into the study."""

    enqueued: list[Enqueued] = field(default_factory=list)
    warm: "WarmStart | None" = None


def parse_assignments(text: str) -> dict[str, str]:
    """NAME=VALUE,NAME=VALUE as given to --enqueue."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise SearchError(f"{ENQUEUE} {text!r}: expected NAME=VALUE[,NAME=VALUE...]")
        out[name.strip()] = value.strip()
    if not out:
        raise SearchError(f"{ENQUEUE} {text!r}: expected NAME=VALUE[,NAME=VALUE...]")
    return out


def _dry_run(suggest: Callable[[Params], TrialConfig], fixed: dict[str, Any], option: str,
             study: str) -> tuple[Params, TrialConfig]:
    p = Params.dry_run(fixed, option=option)
    try:
        return p, suggest(p)
    except ParamError as exc:
        raise SearchError(str(exc)) from None
    except ValueError as exc:
        raise SearchError(f"{option}: rejected by study {study}: {exc}") from None


def enqueued_params(given: dict[str, str], settings: SearchSettings,
                    suggest: Callable[[Params], TrialConfig]) -> dict[str, Any]:
    """The values of one --enqueue in the study's own terms, each checked against the space:
    a name it has (with these values: spaces are conditional), that it searches, and a value
    it can hold."""
    study = settings.study
    for name in given:
        if name in settings.params:
            raise SearchError(f"{ENQUEUE} {name}={given[name]}: this launch fixes {name} with --param "
                              f"{name}={settings.params[name]}")
    p, _ = _dry_run(suggest, {**settings.params, **given}, ENQUEUE, study)
    out = {}
    for name, text in given.items():
        if name not in p.values:
            raise SearchError(f"{ENQUEUE} {name}={text}: study {study} has no parameter {name} with these values "
                              f"(it has {', '.join(sorted(p.values))})")
        if name not in p.searched:
            raise SearchError(f"{ENQUEUE} {name}={text}: study {study} does not search {name} (a constant; fix it "
                              f"with --param {name}={text})")
        if not p.domains[name].holds(p.values[name]):
            raise SearchError(f"{ENQUEUE} {name}={text}: outside study {study}'s space ({p.domains[name]})")
        out[name] = p.values[name]
    return out


def fixed_study_values(name: str, settings: SearchSettings) -> tuple[dict[str, Any], TrialConfig]:
    """A fixed study's one configuration, every value by name, with the launch's --param
    applied where the fixed study has that name (seed-fcn at --param size=60x80)."""
    option = f"--enqueue-study {name}"
    try:
        suggest = load_study(name)
    except StudyError as exc:
        raise SearchError(f"{option}: {exc}") from None
    names, _ = _dry_run(suggest, {}, option, name)
    p, config = _dry_run(suggest, {k: v for k, v in settings.params.items() if k in names.values}, option, name)
    if p.free():
        raise SearchError(f"{option} is a search space, not one configuration (it searches {', '.join(p.free())})")
    return p.values, config


def _config_differences(want: TrialConfig, got: TrialConfig) -> list[str]:
    a, b = want.flat(), got.flat()
    return [f"{key} {a.get(key)} (here {b.get(key)})" for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


MAX_BRANCHES = 512  # categorical choices tried when a fixed study leaves a space's choices open


@dataclass
class _Branch:
    """One way of reading a fixed study in a space: the categorical choices it made for the
    names the fixed study does not set (a `family`), and what it came to."""

    params: dict[str, Any]
    notes: list[str]
    problems: list[str]
    complete: bool = True  # False: the space searches names this branch leaves unset


def _branches(name: str, values: dict[str, Any], settings: SearchSettings,
              suggest: Callable[[Params], TrialConfig], chosen: dict[str, Any], budget: list[int]):
    option, study = f"--enqueue-study {name}", settings.study
    budget[0] -= 1
    if budget[0] < 0:
        return
    # The fixed study's values for every name this branch searches, to a fixed point (a value
    # can open a branch with more names).
    taken: dict[str, Any] = {}
    for _ in range(8):
        p, got = _dry_run(suggest, {**taken, **chosen, **settings.params}, option, study)
        more = {k: v for k, v in values.items() if k in p.searched and k not in settings.params and k not in chosen}
        if more == taken:
            break
        taken = more
    free = [k for k in p.free() if k not in chosen]
    if free:
        open_ = [k for k in free if p.domains[k].kind == "categorical"]
        if not open_:
            yield _Branch({}, [], [f"it searches {', '.join(free)}, which {name} does not set"], complete=False)
            return
        for choice in p.domains[open_[0]].choices:
            yield from _branches(name, values, settings, suggest, {**chosen, open_[0]: choice}, budget)
        return
    problems = [f"{k}={v} is outside it ({p.domains[k]})" for k, v in taken.items()
                if k in p.domains and not p.domains[k].holds(p.values[k])]
    # The space's own constants stand (its resolution, say): the fixed study is compared as if
    # built with them, and the launch says where they differ from it.
    constants = {k: p.values[k] for k in values
                 if k in p.values and k not in p.searched and k not in settings.params and p.values[k] != values[k]}
    _, want = _dry_run(load_study(name), {**{k: v for k, v in settings.params.items() if k in values}, **constants},
                       option, name)
    problems = problems or _config_differences(want, got)
    notes = [f"{k}={v} (this space's; {name} has {values[k]})" for k, v in constants.items()]
    yield _Branch({k: p.values[k] for k in p.searched if k in taken or k in chosen}, notes, problems)


def mapped_params(name: str, settings: SearchSettings,
                  suggest: Callable[[Params], TrialConfig]) -> tuple[dict[str, Any], list[str]]:
    """A fixed study's configuration in the launched space: the values of the names the space
    searches, and for a name the fixed study does not set (a `family`) the categorical choice
    that builds the same model. The space's constants stand and are returned as notes. Whatever
    the space cannot hold (a value outside it, a name it searches that no choice explains, an
    architecture of its own) is one line."""
    values, _ = fixed_study_values(name, settings)
    found = list(_branches(name, values, settings, suggest, {}, [MAX_BRANCHES]))
    for branch in found:
        if not branch.problems:
            return branch.params, branch.notes
    # The nearest miss is the most useful line: a branch that builds a model and differs in one
    # setting says more than one that leaves names unset.
    fewest = (min(found, key=lambda b: (not b.complete, len(b.problems))).problems if found
              else ["too many choices to try"])
    raise SearchError(f"--enqueue-study {name}: study {settings.study} cannot hold its configuration: "
                      f"{'; '.join(fewest)}")


# --- warm start ---------------------------------------------------------------------------


def defining_difference(was: SearchSettings, now: SearchSettings) -> tuple[str, Any, Any] | None:
    """The first setting that gives trial values their meaning (DEFINING) where two differ."""
    for option, before, after in was.differences(now, DEFINING):
        if before is None and option.startswith("--study ("):
            continue  # created before study files were digested: nothing to compare with
        return option, before, after
    return None


@dataclass
class WarmStart:
    source: optuna.Study
    settings: SearchSettings  # the source's

    @property
    def name(self) -> str:
        return self.source.study_name

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.source.get_trials(deepcopy=False, states=COUNTED)

    def add_to(self, study: optuna.Study) -> int:
        """Copy the source's finished trials not copied before; returns how many were added."""
        def key(origin: dict) -> tuple:
            return origin["study"], origin["trial"]

        done = {key(w) for t in study.get_trials(deepcopy=False) if (w := t.user_attrs.get(WARM_START))}
        todo = [warm_copy(t, self.name) for t in self.trials() if key(trained_in(t, self.name)) not in done]
        study.add_trials(todo)
        return len(todo)


def trained_in(t: optuna.trial.FrozenTrial, source: str) -> dict:
    """{"study", "trial"} that trained trial t of study source: itself, or for a trial source
    copied in turn, the study it came from."""
    return t.user_attrs.get(WARM_START) or {"study": source, "trial": t.number}


def warm_copy(t: optuna.trial.FrozenTrial, source: str) -> optuna.trial.FrozenTrial:
    """A finished trial as the new study keeps it: parameters with their distributions, value,
    learning curve, dates and record (MLflow run, models), and where it came from: the study
    that trained it, kept through later warm starts, since its MLflow run is in that study's store."""
    return optuna.trial.FrozenTrial(
        number=-1, trial_id=-1, state=t.state, value=None, values=t.values, datetime_start=t.datetime_start,
        datetime_complete=t.datetime_complete, params=dict(t.params), distributions=dict(t.distributions),
        user_attrs={**t.user_attrs, WARM_START: trained_in(t, source)}, system_attrs={},
        intermediate_values=dict(t.intermediate_values))


def open_warm_start(seeds: Seeds, settings: SearchSettings, data_id: dict) -> WarmStart:
    """The earlier study, checked to have measured its trials as this launch will."""
    from search.stores.storage import check_storage, open_storage

    name, storage = seeds.warm_start_from, seeds.warm_start_storage or settings.storage
    option = f"--warm-start-from {name}"
    if name == settings.study_name and storage == settings.storage:
        raise SearchError(f"{option}: that is this study; use resume to continue it")
    check_storage(storage, must_exist=True)
    try:
        source = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise SearchError(f"{option}: no study named {name!r} in {redact(storage)}") from None
    stored = source.user_attrs.get(SETTINGS_ATTR)
    if not stored:
        raise SearchError(f"{option}: study {name} was not made by search launch")
    was = SearchSettings.from_json(stored, storage=storage)
    if diff := defining_difference(was, settings):
        option_name, before, after = diff
        raise SearchError(f"{option}: it was created with {option_name} {before}, this launch says {after}; only "
                          f"trials measured alike can be added")
    known = source.user_attrs.get(DATA_ATTR)
    if not known or known["listing"] != data_id["listing"]:
        raise SearchError(f"{option}: its TRAIN files differ from --data-dir {settings.data_dir}'s (there: "
                          f"{known['images'] if known else '?'} images, here: {data_id['images']}); its trials were "
                          f"validated on another split")
    return WarmStart(source, was)


def _mapped(name: str, settings: SearchSettings, suggest: Callable[[Params], TrialConfig]):
    params, notes = mapped_params(name, settings, suggest)
    return params, name, tuple(notes)


def plan(seeds: Seeds, settings: SearchSettings, data_id: dict) -> Plan:
    """Every check of the launch's known configurations and warm start, nothing written."""
    if seeds.warm_start_storage and not seeds.warm_start_from:
        raise SearchError("--warm-start-storage goes with --warm-start-from")
    result = Plan()
    if seeds.enqueue or seeds.enqueue_studies:
        suggest = load_study(settings.study)
        result.enqueued = [Enqueued(*_mapped(n, settings, suggest)) for n in seeds.enqueue_studies]
        result.enqueued += [Enqueued(enqueued_params(parse_assignments(text), settings, suggest), ENQUEUE)
                            for text in seeds.enqueue]
    if seeds.warm_start_from:
        result.warm = open_warm_start(seeds, settings, data_id)
    return result


def apply(plan_: Plan, study: optuna.Study, settings: SearchSettings) -> list[str]:
    """Write the plan into the study; returns notes for the launch to print. Safe to repeat:
    trials copied or enqueued before are not added again."""
    notes = []
    if plan_.warm:
        added = plan_.warm.add_to(study)
        if added:
            notes.append(f"{added} finished trial(s) of {plan_.warm.name} added (warm start); they count toward "
                         f"--trials {settings.trials}")
        if redact(settings.tracking_uri) != plan_.warm.settings.tracking_uri:
            notes.append(f"the warm-started trials' MLflow runs are in {plan_.warm.settings.tracking_uri}, not "
                         f"{redact(settings.tracking_uri)}: evaluate and ensemble find their models there only")
    for e in plan_.enqueued:
        if e.notes:
            notes.append(f"--enqueue-study {e.source} at {', '.join(e.notes)}")
        # skip_if_exists: a relaunch does not queue a known configuration twice.
        study.enqueue_trial(e.params, user_attrs={ENQUEUED: e.source}, skip_if_exists=True)
    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in COUNTED for t in trials)
    if finished >= settings.trials and any(t.state == optuna.trial.TrialState.WAITING for t in trials):
        notes.append(f"it already has {finished} finished trials of --trials {settings.trials}: raise --trials to run "
                     f"the queued ones")
    return notes


def enqueued_count(study: optuna.Study) -> int:
    """Known configurations the study was given here (its sampler's start-up comes on top);
    a retry is the same configuration again, a warm-started baseline was counted where it ran."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if ENQUEUED in (a := t.user_attrs) and WARM_START not in a and a.get(ORIGIN, t.number) == t.number)
