"""The sampler of a study's search, built in one place from the settings the study keeps.

``aquasurf optimize`` keeps its :class:`StudySettings` with the study; the map process and
``aquasurf plot`` rebuild the search's sampler from them (:func:`study_sampler`), and ``status``,
``best`` and ``top`` read them without building it. Only this module's functions that build a
sampler or a space import torch, so that reading the settings stays quick.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from optuna_aquasurf.cli._console import UserError

if TYPE_CHECKING:
    import optuna

    from optuna_aquasurf import AquaSurfSampler, SearchSpace
    from optuna_aquasurf.cli._userfile import UserFile

#: Study user attribute where ``optimize`` keeps its :class:`StudySettings`.
SETTINGS_ATTR = "aquasurf"


@dataclass(frozen=True)
class StudySettings:
    """What a search keeps with its study (user attribute :data:`SETTINGS_ATTR`), as its last
    ``optimize`` run set it. A setting that an older study lacks keeps its default here: what
    the CLI did before it kept that setting.

    Attributes
    ----------
    file
        The model file, as given to ``optimize``.
    space
        ``SPACE`` of the model file: schemas or expressions; None for the paper's space.
    seed
        ``--seed``.
    map_key
        The key of the study's map (:attr:`~optuna_aquasurf.AquaSurfSampler.map_key`).
    prior
        The ``--prior`` sources.
    max_cost
        ``--max-cost``.
    objectives
        ``--objectives``: ``("score",)`` or ``("score", "cost")``.
    cost_device
        Where the search measured costs: the torch device it trained on.
    """

    file: str | None = None
    space: Sequence[str] | None = None
    seed: int = 0
    map_key: str | None = None
    prior: Sequence[str] = ()
    max_cost: float | None = None
    objectives: Sequence[str] = ("score",)
    cost_device: str = "cpu"

    @classmethod
    def of(cls, study: optuna.Study) -> StudySettings | None:
        """The settings kept with ``study``; None for a study that keeps none (not made by
        ``aquasurf optimize``, or older than the settings)."""
        kept = study.user_attrs.get(SETTINGS_ATTR)
        if kept is None:
            return None
        names = [field.name for field in dataclasses.fields(cls)]
        return cls(**{name: kept[_key(name)] for name in names if _key(name) in kept})

    @classmethod
    def of_model_file(cls, user: UserFile, **settings) -> StudySettings:
        """The settings of a search of the model file ``user``: its path and ``SPACE``, and
        ``settings`` (the defaults for those not given)."""
        return cls(file=str(user.path), space=user.space, **settings)

    def save(self, study: optuna.Study) -> None:
        """Keep these settings with ``study``."""
        kept = {_key(name): value for name, value in dataclasses.asdict(self).items()}
        study.set_user_attr(SETTINGS_ATTR, kept)

    def search_space(self) -> SearchSpace:
        """The search space of :attr:`space`.

        Raises
        ------
        ValueError
            For a malformed schema or expression, or an operator this process does not know.
        """
        from optuna_aquasurf import PAPER_UNARY, SearchSpace

        if self.space is None:
            return SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=PAPER_UNARY)
        return SearchSpace.from_schemas(self.space)


def _key(name: str) -> str:
    """The key of the setting ``name`` in :data:`SETTINGS_ATTR`: its name, but ``"map"`` for
    :attr:`StudySettings.map_key`, as studies have always kept it."""
    return "map" if name == "map_key" else name


def study_sampler(
    settings: StudySettings, user: UserFile | None = None, device=None
) -> AquaSurfSampler:
    """The sampler of the search that ``settings`` describe: its space, seed, prior, max cost
    and cost device.

    With the model file ``user``, it is the search's own sampler, whose Fisher probe runs the
    model on ``device`` (it computes the map if missing). Without it, it reads the map stored
    under :attr:`StudySettings.map_key` and predicts from that 2-D map, there being no Fisher
    features without the model.

    Raises
    ------
    UserError
        For a space that cannot be built, a ``--prior`` that names nothing readable or a
        ``--max-cost`` of zero.
    """
    from optuna_aquasurf import AquaSurfSampler

    try:
        space = settings.search_space()
    except ValueError as error:
        if user is None:  # the search built it with the model file: an operator of that file
            raise UserError(
                f"The space of {settings.file} needs the operators of that model file "
                f"({error}): give it, `aquasurf plot FILE`."
            ) from None
        raise UserError(f"SPACE in {settings.file}: {error}") from None
    if user is None:
        source = {"map_key": settings.map_key, "surrogate": "map"}
    else:
        source = {"probe": user.probe(settings.seed, device)}
    try:
        return AquaSurfSampler(
            space,
            seed=settings.seed,
            prior=settings.prior,
            max_cost=settings.max_cost,
            cost_device=settings.cost_device,
            **source,
        )
    except ValueError as error:
        raise UserError(str(error)) from None


def plot_sampler(study: optuna.Study, user: UserFile | None = None, device=None) -> AquaSurfSampler:
    """The sampler whose map and predictions ``aquasurf plot`` draws: the study's
    (:func:`study_sampler`), with the model file ``user`` on ``device`` or from the map stored
    with the study. A study that keeps no settings is plotted with the file's ``SPACE`` and
    seed 0.

    Raises
    ------
    UserError
        Without the model file, when the study keeps no map key or its map is not stored yet;
        and as :func:`study_sampler`.
    """
    settings = StudySettings.of(study)
    if user is not None:
        return study_sampler(settings or StudySettings.of_model_file(user), user, device)
    if settings is None or settings.map_key is None:
        raise UserError(
            f"Study {study.study_name!r} does not record its map (an older study): give the "
            "model file, `aquasurf plot FILE`."
        )
    sampler = study_sampler(settings)
    if not sampler.has_embedding(study):
        raise UserError(
            f"The map of study {study.study_name!r} is not stored yet: give the model file, "
            "`aquasurf plot FILE`, to compute it."
        )
    return sampler


def study_space(study: optuna.Study):
    """The search space of the study's last ``optimize`` run, or None if it cannot be rebuilt
    (an old study, or operators registered by the model file)."""
    settings = StudySettings.of(study)
    if settings is None:
        return None
    try:
        return settings.search_space()
    except ValueError:
        return None
