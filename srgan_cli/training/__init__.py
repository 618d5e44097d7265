"""Training SRResNet / SRGAN: everything ``srgan train`` runs, one module per concern.

    train.py           the run: ``train(config, run_dir)``, the ``Trainer`` and its loop
    config.py          ``TrainConfig``: the options of a run, read from / written to TOML
    data.py            training batches: random HR crops of image folders, their LR patches
    state.py           what ``--resume`` needs: networks, optimizers and RNG in one file
    display.py         the live progress display and deferred Ctrl-C
    distributed.py     torchrun: process groups, shares of a batch (also ``upscale --shard``)
    sync_batchnorm.py  BatchNorm statistics over all processes (``sync_bn``)
    loss_window.py     losses kept on the device until the loop reads them (no per-step sync)
    speed.py           samples/s and the share of time spent waiting for data, per log window
    plot.py            ``curves.png`` from ``log.jsonl``

The command line (``cli.py``) is a thin layer over ``train.train``.
"""

# Here rather than in config.py, so that the command line can offer the choices without
# importing the training code (config.py re-exports it).
COMPILE_MODES = ("off", "networks", "step")
"""``compile``: off | networks (each network torch.compiled) | step (each phase's whole
differentiable step compiled as one function, CUDA graphs on CUDA; docs/training.md "How fast")."""
