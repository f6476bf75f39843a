"""Pipeline stages, one module each. A stage exposes ``STAGE`` (name, version, params sections) and
``run(ctx, **kwargs)``; it reads and writes artifacts only through its :class:`irforge.stage.StageContext`
and never imports another stage."""
