"""The application around the model: the ``pdesim`` command line and everything it writes.

``cli`` (the commands), ``spec`` (a run's ``RunSpec``), ``presets`` (shipped experiments and
their findings), ``arms`` (one configuration as PDE and Transformer), ``runner`` (a whole run),
``measure`` and ``summary`` (metrics and what a run states), ``rundir`` (run directories),
``figures``, ``stability`` (``pdesim info``), ``tomlio`` (config files), ``train_dir`` (training
run directories) and ``sweep`` (grids of training runs). The model layer imports none of it.

Nothing is imported here, so ``import pdesim.app.tomlio`` loads only what it needs.
"""
