"""The pipeline's stages, one module each, in the order the data moves: reference -> audit ->
train_adp -> generate -> report. Each is a plain function of the params that DVC runs
(``python -m fairsynth.app.stages.<stage>``, its module being its code dependency) and a
Prefect task wraps (``tasks/pipeline.py``), so ``dvc repro`` and the flows never diverge.
Stages pass paths, not tensors. ``python -m fairsynth.app.stages STAGE`` runs any of them."""
