"""Task registry: task name -> Task class, and `get_tasks(config)`.

Task modules register their classes with the `register_task` decorator:

    @task_builder.register_task("squad")
    class SQuAD(QATask):
      def __init__(self, config, tokenizer): ...

Every registered class is constructed as `cls(config, tokenizer)`. The registry is
filled lazily by importing the task modules listed in `_TASK_MODULES` on first use, so
this file never has to change when a task module adds names.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from finetune import task as task_lib
from util.cli import UserError

# Modules that register tasks when imported (a missing optional module is skipped).
_TASK_MODULES = (
    "finetune.classification.classification_tasks",
    "finetune.tagging.tagging_tasks",
    "finetune.qa.qa_tasks",
)

_REGISTRY: dict[str, type] = {}
_loaded = False


def register_task(name: str) -> Callable[[type], type]:
    """Class decorator adding a Task subclass to the registry under `name`."""

    def decorator(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, task_lib.Task)):
            raise TypeError(f"register_task({name!r}) decorates {cls!r}, which is not a "
                            "finetune.task.Task subclass.")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"Task name {name!r} is registered twice: by "
                             f"{existing.__module__}.{existing.__name__} and "
                             f"{cls.__module__}.{cls.__name__}.")
        _REGISTRY[name] = cls
        return cls

    return decorator


def _load_task_modules() -> None:
    global _loaded
    if _loaded:
        return
    for module in _TASK_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            # Only tolerate the task module itself being absent, never a broken import
            # inside it.
            if e.name != module:
                raise
    _loaded = True


def valid_task_names() -> list[str]:
    """Sorted names of every registered task."""
    _load_task_modules()
    return sorted(_REGISTRY)


def _unknown_task_error(names: list[str]) -> UserError:
    """The one message for unknown names: lists every valid name and where to fix it."""
    return UserError(f"unknown task name(s) {names} in task_names. Valid task names: "
                     f"{', '.join(valid_task_names())}. Fix task_names in --hparams.")


def get_task(config: Any, task_name: str, tokenizer: Any) -> task_lib.Task:
    """Builds one task by name; an unknown name raises a UserError listing valid names."""
    _load_task_modules()
    cls = _REGISTRY.get(task_name)
    if cls is None:
        raise _unknown_task_error([task_name])
    return cls(config, tokenizer)


def get_tasks(config: Any, tokenizer: Any = None) -> list[task_lib.Task]:
    """Builds the tasks of `config.task_names`.

    The names are checked before the tokenizer is built, so a bad name is reported
    first; every problem here is the user's to fix and raises util.cli.UserError
    (task_names empty, repeated or unknown; the vocab's VocabError is one too).

    Args:
      config: a FinetuningConfig (task_names, vocab_file, do_lower_case, ...).
      tokenizer: a model.tokenization.FullTokenizer; built from config.vocab_file and
        config.do_lower_case when None.
    """
    names = list(config.task_names)
    if not names:
        raise UserError("task_names is empty; name at least one task, e.g. "
                        '--hparams \'{"task_names": ["cola"]}\'.')
    if len(set(names)) != len(names):
        raise UserError(f"task_names {names} lists a task more than once; list each "
                        "task once.")
    unknown = [n for n in names if n not in valid_task_names()]
    if unknown:
        raise _unknown_task_error(unknown)
    if tokenizer is None:
        from model import tokenization  # deferred: only needed when none is passed in
        tokenizer = tokenization.FullTokenizer(config.vocab_file,
                                               do_lower_case=config.do_lower_case)
    return [get_task(config, name, tokenizer) for name in names]
