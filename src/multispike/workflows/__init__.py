"""Workflows: the pipelines that open a checkpoint, build, measure and write. The command line
(:mod:`multispike.cli`) parses flags, calls one of these and prints what it returns.

=================================  ==========================================================
module                             what it runs
=================================  ==========================================================
:mod:`.reproduce`                  ``multispike reproduce``: a paper's table row, from dataset
                                   folder to "paper vs ours"
:mod:`.deploy_checkpoint`          ``multispike deploy``: checkpoint in, verified deployable
                                   model (and NIR graph) out
:mod:`.evaluate_checkpoint`        ``multispike eval``: a checkpoint at several T on its
                                   run's test split
:mod:`.import_nir`                 ``multispike import``: a NIR graph as a checkpoint
:mod:`.demo`                       ``multispike demo``: neuron designs compared on digits
:mod:`.measure`                    ``multispike energy`` / ``analyze``: a model measured on a
                                   dataset (energy per sample, activity figures)
:mod:`.sweeps`                     the training function ``analyze --sweep`` hands the sweeps
=================================  ==========================================================

Workflows sit above the engine, the analysis and deploy, and below the command line only.
"""
