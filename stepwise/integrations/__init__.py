"""Plans inside other tools: ``StepwiseScheduler`` runs a schedule file in diffusers pipelines.

Needs the ``torch`` extra; nothing here is imported by ``import stepwise``.
"""


def __getattr__(name):
    if name == "StepwiseScheduler":
        from stepwise.integrations.diffusers_scheduler import StepwiseScheduler
        return StepwiseScheduler
    raise AttributeError(f"module 'stepwise.integrations' has no attribute {name!r}")
