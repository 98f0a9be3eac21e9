"""Datasets: readers for on-disk formats, the procedural generator and the training-pair dataset.

* :mod:`novelview.data.formats` -- ``open_dataset(path) -> list[Scene]``, ``load_view(scene, i, size)``
* :mod:`novelview.data.synthetic` -- ``novelview data synth`` (analytic ray caster)
* :mod:`novelview.data.views` -- ``MultiViewDataset`` (condition/target pairs for training)
"""
