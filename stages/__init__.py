"""Pipeline stages, one module each, found by the registry (:func:`irforge.engine.stage_modules`). A stage
declares ``STAGE`` (name, version, params sections, its own section's config, inputs, outputs) and
``run(ctx) -> dict``; it reads and writes artifacts only through its :class:`irforge.engine.StageContext`
and never imports another stage."""
